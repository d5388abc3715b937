"""What a client may write as a number or a date (server/bounds.py): one reader for all."""

from __future__ import annotations

import datetime as dt

import pytest

from server import bounds


@pytest.mark.parametrize(
    ("text", "value"), [("0", 0), ("12", 12), (" 7 ", 7), ("2147483647", 2**31 - 1)]
)
def test_whole_numbers_in_ascii_digits_are_read(text, value):
    assert bounds.whole_number(text) == value


@pytest.mark.parametrize(
    "text",
    ["1e3", "0x10", "1_000", "+5", "\u0661\u0662", "", " ", "1.0", "NaN", "12abc", "--1"],
)
def test_what_python_reads_as_a_number_but_a_person_does_not_write_is_refused(text):
    with pytest.raises(bounds.OutOfBounds):
        bounds.whole_number(text)


@pytest.mark.parametrize(
    "text", ["2147483648", "100000000000000000000", "9" * 5000, "-1", "-" + "9" * 5000]
)
def test_numbers_beyond_the_bounds_are_refused_without_reading_them_whole(text):
    with pytest.raises(bounds.OutOfBounds):
        bounds.whole_number(text)


def test_a_reader_may_widen_or_narrow_the_bounds():
    assert bounds.whole_number("-5", minimum=-10) == -5
    assert bounds.whole_number(str(2**63 - 1), maximum=bounds.BIGINT_MAX) == 2**63 - 1
    with pytest.raises(bounds.OutOfBounds):
        bounds.whole_number("0", minimum=1)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, float("inf"), float("nan"), 10**400])
def test_parsed_numbers_a_column_cannot_be_compared_with_are_refused(value):
    with pytest.raises(bounds.OutOfBounds):
        bounds.check_number(value)


@pytest.mark.parametrize("value", [None, True, 0, 2**63 - 1, -(2**63), 1.5, "text"])
def test_other_values_pass_unchanged(value):
    assert bounds.check_number(value) is value


def test_a_bare_date_as_the_end_of_a_period_includes_that_day():
    assert bounds.moment("2024-05-07") == dt.datetime(2024, 5, 7, tzinfo=dt.UTC)
    assert bounds.moment("2024-05-07", end=True) == dt.datetime(2024, 5, 8, tzinfo=dt.UTC)
    assert bounds.moment("2024-05-07T14:00Z") == dt.datetime(2024, 5, 7, 14, tzinfo=dt.UTC)
    assert bounds.moment("2024-05-07T14:00") == dt.datetime(2024, 5, 7, 14, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "text", ["9999-12-31", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2024-13-45"]
)
def test_dates_at_the_ends_of_the_calendar_are_refused(text):
    with pytest.raises(bounds.OutOfBounds):
        bounds.moment(text, end=True)
    with pytest.raises(bounds.OutOfBounds):
        bounds.day(text[:10])
