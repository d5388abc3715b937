"""The pieces of exports that need no database: options, $filter, values, merged layouts, names."""

from __future__ import annotations

import ast
import datetime as dt
import io
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.dialects import postgresql, sqlite

from server.errors import BadExportOption, ODataFilterInvalid, UnsupportedODataField
from server.exports import compiled, values, xlsx
from server.exports import layout as L
from server.exports.options import ExportOptions, parse_options
from server.exports.streams import ChunkBuffer, entry_segment, open_entry, open_zip
from server.odata.filter import parse_filter


@pytest.fixture(autouse=True)
def _babel():
    """Messages are built with gettext: give them an application context (English)."""
    from flask_babel import Babel

    app = Flask(__name__)
    Babel(app, locale_selector=lambda: "en")
    with app.test_request_context():
        yield


def field(path: str, type_: str = "string", kind: str = "field", **extra) -> dict:
    return {"path": path, "name": path.rsplit("/", 1)[1], "kind": kind, "type": type_, **extra}


def schema(*fields: dict, choices: dict | None = None, languages=()) -> dict:
    return {
        "root": "data",
        "fields": list(fields),
        "choiceLists": choices or {},
        "languages": list(languages),
        "defaultLanguage": languages[0] if languages else None,
    }


# ---- options ----------------------------------------------------------------------------------


def test_options_read_centrals_parameters_and_ours():
    options = parse_options(
        {
            "groupPaths": "False",  # pyodk sends Python's spelling
            "splitSelectMultiples": "true",
            "deletedFields": "false",
            "attachments": "0",
            "start": "2024-05-01",
            "end": "2024-05-31",
            "reviewState": "approved,null",
            "submitterId": "4, 7",
            "formVersion": "1,2",
            "fields": "name, /data/grp",
            "headers": "labels",
            "language": "fr",
            "separator": ".",
            "pii": "pseudonymize",
            "bom": "yes",
            "unknown": "ignored",
        }
    )
    assert options == ExportOptions(
        headers="labels",
        language="fr",
        group_paths=False,
        separator=".",
        split_select_multiples=True,
        start=dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
        end=dt.datetime(2024, 6, 1, tzinfo=dt.UTC),  # a bare end date includes that day
        review_states=("approved", "received"),
        submitter_ids=(4, 7),
        form_versions=("1", "2"),
        fields=("name", "/data/grp"),
        deleted_fields=False,
        bom=True,
        attachments=False,
        pii="pseudonymise",
    )
    assert options.describe()["group_paths"] is False
    assert options.describe()["start"] == "2024-05-01T00:00:00+00:00"
    assert "cleaned" not in options.describe()  # defaults are left out of the audit log


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"groupPaths": "oui"}, "groupPaths"),
        ({"headers": "titles"}, "headers"),
        ({"separator": "----"}, "separator"),
        ({"start": "07/05/2024"}, "start"),
        ({"start": "2024-05-02", "end": "2024-05-01"}, "end"),
        ({"reviewState": "approuvé"}, "reviewState"),
        ({"submitterId": "moi"}, "submitterId"),
        ({"pii": "hidden"}, "pii"),
    ],
)
def test_bad_option_values_name_the_parameter(params, field):
    with pytest.raises(BadExportOption) as raised:
        parse_options(params)
    assert raised.value.details["field"] == field
    assert raised.value.status == 400


# ---- $filter ------------------------------------------------------------------------------------


def sql(text: str, dialect=postgresql.dialect()) -> str:
    expression = parse_filter(text, dialect.name)
    return str(expression.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def test_filter_translates_centrals_subset_to_sql():
    assert sql("__system/submitterId eq 5") == (
        "submissions.submitter_id IS NOT NULL AND submissions.submitter_id = 5"
    )
    assert sql("__system/reviewState eq null") == "submissions.review_state IS NULL"
    assert sql("__system/reviewState ne 'rejected'") == (
        "submissions.review_state != 'rejected' OR submissions.review_state IS NULL"
    )
    both = sql(
        "__system/submissionDate ge 2024-05-01T00:00:00Z and "
        "(__system/reviewState eq 'approved' or __system/reviewState eq 'hasIssues')"
    )
    assert "submissions.created_at >= '2024-05-01 00:00:00+00:00'" in both
    assert " OR " in both
    # A literal on the left is turned around.
    assert sql("5 lt __system/submitterId") == (
        "submissions.submitter_id IS NOT NULL AND submissions.submitter_id > 5"
    )
    assert "EXTRACT(year FROM timezone('UTC', submissions.created_at))" in sql(
        "year(__system/submissionDate) eq 2024"
    )
    assert "STRFTIME('%Y'" in sql("year(__system/submissionDate) eq 2024", sqlite.dialect())
    assert sql("not (__id eq 'uuid:a''b')") == (
        "NOT (submissions.instance_id IS NOT NULL AND submissions.instance_id = 'uuid:a''b')"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "__system/submitterId",
        "__system/submitterId eq",
        "__system/submitterId eq 'five'",
        "__system/reviewState eq 5",
        "__system/reviewState gt null",
        "1 eq 1",
        "year(__system/reviewState) eq 2024",
        "__system/submitterId eq 1 and",
        "(__system/submitterId eq 1",
        "__system/submitterId eq 1; DROP TABLE submissions",
        "contains(__id, 'x')",
    ],
)
def test_unusable_filters_are_400_18(text):
    with pytest.raises(ODataFilterInvalid) as raised:
        parse_filter(text)
    assert raised.value.code == "400.18"


@pytest.mark.parametrize("text", ["__system/whatever eq 1", "name eq 'x'", "__id eq unquoted"])
def test_fields_submissions_cannot_be_filtered_on_are_501_5_as_in_central(text):
    with pytest.raises(UnsupportedODataField) as raised:
        parse_filter(text)
    assert raised.value.code == "501.5"  # Central's unsupportedODataField


# ---- values -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_type", "raw", "csv_cell", "excel"),
    [
        ("int", "034", "34", 34),
        ("int", "-7", "-7", -7),
        ("int", "douze", "douze", "douze"),
        ("int", "12345678901234567", "12345678901234567", "12345678901234567"),
        ("decimal", "12.50", "12.50", 12.5),
        ("decimal", "nan", "nan", "nan"),
        ("date", "2024-05-07", "2024-05-07", dt.date(2024, 5, 7)),
        ("date", "2024-05-07T00:00:00.000+02:00", "2024-05-07", dt.date(2024, 5, 7)),
        ("date", "07/05/2024", "07/05/2024", "07/05/2024"),
        ("boolean", "1", "true", True),
        ("boolean", "FALSE", "false", False),
        ("select_multiple", "a  b\tc", "a b c", "a b c"),
        # Excel has no time zone: the tablet's clock time (the CSV keeps the offset).
        (
            "dateTime",
            "2024-05-07T14:01:55.123+02:00",
            "2024-05-07T14:01:55.123+02:00",
            dt.datetime(2024, 5, 7, 14, 1, 55, 123000),
        ),
        ("dateTime", "hier", "hier", "hier"),
        ("time", "14:01:55.123+02:00", "14:01:55.123+02:00", dt.time(14, 1, 55, 123000)),
        ("time", "midi", "midi", "midi"),
    ],
)
def test_cleaned_values_for_csv_and_excel(field_type, raw, csv_cell, excel):
    to_csv, to_excel = values.csv_converter(field_type), values.xlsx_converter(field_type)
    assert (to_csv(raw) if to_csv else raw) == csv_cell
    assert (to_excel(raw) if to_excel else raw) == excel


def test_the_fast_paths_agree_with_the_converters():
    types = [*compiled.CSV_ALREADY_CLEAN, "string", "decimal", "geopoint", "dateTime"]
    checks = {
        name: eval(  # noqa: S307 - our own constant expressions
            f"lambda v: {compiled.CSV_ALREADY_CLEAN.get(name, compiled.CSV_PLAIN_TEXT)}"
        )
        for name in types
    }
    samples = ["0", "7", "07", "-1", "1e3", "٣", "12", "2024-05-07", "2024-05-07T00:00", "true",
               "1", "a b", "a  b", "a\tb", "x", "=1+1", "+3", "@x", "=123456789", "-a b",
               "=SUM(1) 2"]  # fmt: skip
    for field_type, already_clean in checks.items():
        for guard in (False, True):
            convert = values.csv_converter(field_type, guard=guard)
            for sample in samples:
                if already_clean(sample) and convert is not None:
                    assert convert(sample) == sample, (field_type, guard, sample)


@pytest.mark.parametrize(
    ("field_type", "raw", "cell"),
    [
        ("string", '=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("string", "-5", "'-5"),  # text stays text: a phone number keeps its +
        ("string", "+223 76 00 00 00", "'+223 76 00 00 00"),
        ("string", "@SUM(1)", "'@SUM(1)"),
        ("string", "\t=1", "'\t=1"),
        ("string", "\r=1", "'\r=1"),
        ("string", "a=1", "a=1"),
        ("int", "-5", "-5"),
        ("int", "+3", "3"),
        ("int", "-2+3", "'-2+3"),
        ("decimal", "-1.5e3", "-1.5e3"),
        ("decimal", "=1", "'=1"),
        ("date", "=1+1+1+1+1", "'=1+1+1+1+1"),
        ("boolean", "@x", "'@x"),
        ("select_one", "-x", "'-x"),
        ("select_multiple", "=a  b", "'=a b"),
        ("geopoint", "-12.6 -8.0 0 5", "-12.6 -8.0 0 5"),
        ("geotrace", "-12 -8;-13 -8", "-12 -8;-13 -8"),
        ("geoshape", "-12 =A1", "'-12 =A1"),
        ("dateTime", "-2024", "'-2024"),
        ("binary", "=x.jpg", "'=x.jpg"),
    ],
)
def test_csv_cells_that_would_be_formulas_are_text_unless_they_fit_their_type(
    field_type, raw, cell
):
    layout = L.merge("f", [schema(field("/data/q", field_type))], {})
    plan = L.build_plan(layout, ExportOptions(split_geopoints=False), "csv")
    cells = plan.main.convert([""] * L.META_WIDTH + [raw])
    assert cells[plan.main.headers.index("q")] == cell


def test_guarded_cells_read_back_as_their_value():
    for text in ("=1", "-x", "+3", "@a", "\tb", "\rc", "'quoted", "plain", "'", ""):
        assert values.unguard_formula(values.guard_formula(text)) == text
    assert values.guard_unless_number("-8.0029") == "-8.0029"
    assert values.guard_unless_number("-x") == "'-x"


TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _formula_plan(**options):
    fields = [
        field("/data/g", kind="group"),
        field("/data/g/text"),
        field("/data/g/n", "int"),
        field("/data/d", "decimal"),
        field("/data/when", "date"),
        field("/data/at", "dateTime"),
        field("/data/ok", "boolean"),
        field("/data/one", "select_one", choices="l"),
        field("/data/many", "select_multiple", choices="l"),
        field("/data/place", "geopoint"),
        field("/data/line", "geotrace"),
        field("/data/photo", "binary"),
        field("/data/r", kind="repeat"),
        field("/data/r/inner"),
    ]
    choices = {"l": [{"name": "a", "labels": {"en": "-a"}}, {"name": "b", "labels": {}}]}
    layout = L.merge("f", [schema(*fields, choices=choices, languages=("en",))], {"7": "=v1"})
    return L.build_plan(layout, ExportOptions(pii="plain", **options), "csv")


def _raw_main(plan, text: str) -> list:
    row = [""] * L.META_WIDTH
    # What the server writes itself: ids, counts, dates, states.
    row[L.M_ID], row[L.M_DATE], row[L.M_SUBMITTER_ID] = "1", "2024-05-07T10:00:00.000Z", "4"
    row[L.M_PRESENT], row[L.M_EXPECTED], row[L.M_EDITS] = "0", "1", "0"
    row[L.M_REVIEW], row[L.M_FORM_VERSION], row[L.M_VERSION_ID] = "approved", "7", "9"
    # What a client chose.
    for position in (L.M_INSTANCE_ID, L.M_SUBMITTER_NAME, L.M_DEVICE, L.M_INSTANCE_NAME):
        row[position] = text
    return row + [text] * len(plan.main.leaves) + [""] * len(plan.main.children)


def _number(cell: str) -> bool:
    """Tell a number of a numeric field ("+1" is 1 to Excel: no formula to run)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("split", [False, True])
def test_no_csv_cell_starts_a_formula_whatever_the_client_wrote(split):
    plan = _formula_plan(
        split_select_multiples=split, split_geopoints=split, headers="labels", language="en"
    )
    for hostile in ("=1+1", "-2+3", "@A1", "+1", "\t=1", "\r=1"):
        for table in plan.tables():
            raw = (
                _raw_main(plan, hostile)
                if table is plan.main
                else [hostile + "/r[1]", hostile, *[hostile] * len(table.leaves)]
            )
            cells = table.convert(raw)
            formulas = [c for c in cells if str(c).startswith(TRIGGERS) and not _number(c)]
            assert not formulas, (hostile, cells)
            assert not [h for h in table.headers if h.startswith(TRIGGERS)], table.headers


def test_numbers_of_numeric_fields_stay_numbers_and_text_is_quoted():
    plan = _formula_plan(split_geopoints=True)
    row = _raw_main(plan, "-5")
    row[L.META_WIDTH + [leaf.name for leaf in plan.main.leaves].index("place")] = "-12 -8 0 5"
    cells = dict(zip(plan.main.headers, plan.main.convert(row), strict=True))
    assert cells["g-n"] == "-5" and cells["d"] == "-5"
    assert [cells[f"place-{p}"] for p in values.GEO_PARTS] == ["-12", "-8", "0", "5"]
    assert cells["g-text"] == cells["one"] == cells["instanceName"] == "'-5"
    assert cells["KEY"] == cells["DeviceID"] == cells["SubmitterName"] == "'-5"
    assert cells["FormVersion"] == "'=v1"


def test_escape_formulas_off_gives_cells_as_written():
    plan = _formula_plan(escape_formulas=False, headers="labels", language="en")
    cells = dict(zip(plan.main.headers, plan.main.convert(_raw_main(plan, "=1+1")), strict=True))
    assert cells["g-text"] == cells["KEY"] == cells["instanceName"] == "=1+1"
    assert cells["FormVersion"] == "=v1"
    assert parse_options({"escapeFormulas": "false"}).escape_formulas is False
    assert ExportOptions().escape_formulas is True


def test_canonical_values_compare_spellings_of_one_answer():
    assert values.canonical("int", " 034") == values.canonical("int", "34") == 34
    assert values.canonical("decimal", "12.50") == values.canonical("decimal", "12.5")
    assert values.canonical("string", "  ") is None
    assert values.canonical("select_multiple", "a  b") == "a b"
    assert values.canonical("geopoint", "12.60 -8 0 5") == values.canonical(
        "geopoint", "12.6 -8.0 0 5"
    )


def test_checking_new_values_against_types_and_choices():
    assert values.check("int", "12", None) is None
    assert values.check("int", "12.5", None) == "expected a whole number"
    assert values.check("date", "2024-02-30", None) == "expected a date written YYYY-MM-DD"
    assert values.check("dateTime", "2024-05-07T14:00:00+02:00", None) is None
    assert values.check("geopoint", "95 10", None).startswith("the latitude")
    assert values.check("geotrace", "12 -8;13 -8", None) is None
    assert values.check("select_one", "x", ["a", "b"]).startswith("“x” is not one of")
    assert values.check("select_multiple", "a a", ["a", "b"]) == "a choice is given twice"
    assert values.check("select_one", "anything", None) is None  # choices from a file
    assert values.check("int", "", None) is None  # clearing is allowed


# ---- merged layouts -----------------------------------------------------------------------------


def test_columns_follow_the_newest_version_and_removed_fields_keep_their_place():
    v1 = schema(field("/data/a"), field("/data/b"), field("/data/c"), field("/data/d"))
    v2 = schema(field("/data/a"), field("/data/c"), field("/data/new"), field("/data/d"))
    v3 = schema(field("/data/new"), field("/data/a"), field("/data/d"))
    layout = L.merge("f", [v1, v2, v3], {})
    assert [f.name for f in layout.fields] == ["new", "a", "b", "c", "d"]
    assert [f.name for f in layout.fields if f.deleted] == ["b", "c"]


def test_choices_are_the_union_of_every_version():
    lists = {
        "v1": {"l": [{"name": "a", "labels": {}}, {"name": "b", "labels": {}}]},
        "v2": {"l": [{"name": "c", "labels": {}}, {"name": "a", "labels": {}}]},
    }
    q = field("/data/q", "select_multiple", choices="l")
    layout = L.merge("f", [schema(q, choices=lists["v1"]), schema(q, choices=lists["v2"])], {})
    assert layout.by_path["/data/q"].choice_names == ["c", "a", "b"]


def test_nested_repeats_make_linked_tables_with_unique_file_and_sheet_names():
    form = schema(
        field("/data/hh", "repeat", "repeat"),
        field("/data/hh/name"),
        field("/data/hh/grp", "group", "group"),
        field("/data/hh/grp/person", "repeat", "repeat"),
        field("/data/hh/grp/person/age", "int"),
        field("/data/other", "repeat", "repeat"),
        field("/data/other/person", "repeat", "repeat"),
        field("/data/other/person/x"),
    )
    plan = L.build_plan(L.merge("enquête", [form], {}), ExportOptions(), "csv")
    tables = plan.tables()
    assert [(t.path, t.relative) for t in tables] == [
        (None, ()),
        ("/data/hh", ("hh",)),
        ("/data/hh/grp/person", ("grp", "person")),
        ("/data/other", ("other",)),
        ("/data/other/person", ("person",)),
    ]
    assert [t.file_name for t in tables] == [
        "enquête.csv",
        "enquête-hh.csv",
        "enquête-person~1.csv",
        "enquête-other.csv",
        "enquête-person~2.csv",
    ]
    assert tables[2].headers == ["age", "PARENT_KEY", "KEY"]
    assert xlsx.sheet_names(tables) == ["enquête", "hh", "person", "other", "person (2)"]


def test_sheet_names_respect_excels_rules():
    names = xlsx.sheet_names(
        [
            L.TablePlan(path=None, name="a very long form id that exceeds thirty-one", leaves=[]),
            L.TablePlan(path="/x", name="a very long form id that exceeds thirty-one", leaves=[]),
            L.TablePlan(path="/y", name="what?[is]:this*/\\", leaves=[]),
            L.TablePlan(path="/z", name="History", leaves=[]),
        ]
    )
    assert names == [
        "a very long form id that exceed",
        "a very long form id that ex (2)",
        "what__is__this___",
        "History (2)",
    ]
    assert all(len(n) <= 31 for n in names)


def test_headers_from_labels_in_a_language_with_group_paths():
    group = {"Français (fr)": "Ménage", "English (en)": "Household"}
    name = {"Français (fr)": "<b>Nom</b> du chef", "English (en)": "Name"}
    form = schema(
        field("/data/grp", "group", "group", labels=group),
        field("/data/grp/q", labels=name),
        field("/data/loc", "geopoint", labels={"English (en)": "Place"}),
        languages=("Français (fr)", "English (en)"),
    )
    layout = L.merge("f", [form], {})
    french = L.build_plan(layout, ExportOptions(headers="labels", language="fr"), "csv")
    assert french.main.headers[1:6] == [
        "Ménage-Nom du chef",
        "Place-Latitude",  # no French label: the default language, then any
        "Place-Longitude",
        "Place-Altitude",
        "Place-Accuracy",
    ]
    english = L.build_plan(
        layout, ExportOptions(headers="labels", language="English", group_paths=False), "csv"
    )
    assert english.main.headers[1] == "Name"
    with pytest.raises(BadExportOption):
        L.build_plan(layout, ExportOptions(headers="labels", language="bm"), "csv")


def test_compiled_converter_and_extractor():
    convert = compiled.converter(
        [0, 1, 1, 2], [(1, 2, lambda v: [v.upper(), v.lower()], None), (3, 1, int, "v == '1'")]
    )
    assert convert(["a", "Bb", "7"]) == ["a", "BB", "bb", 7]
    assert convert(["a", "", "1"]) == ["a", "", "", "1"]  # empty cells and clean ones stay
    extract = compiled.extractor([("a",), ("g", "b"), ("g", "c", "d")])
    assert extract({"a": " x ", "g": {"b": "y", "c": {"d": None}}}) == ["x", "y", ""]
    assert extract({"a": {"not": "text"}, "g": "text"}) == ["", "", ""]
    assert extract(None) == ["", "", ""]


def test_guarded_cells_go_through_their_function_when_they_start_a_formula():
    quote = values.guard_formula
    one = compiled.converter([0, 1], [], [(1, quote)])
    assert one(["=a", "=b"]) == ["=a", "'=b"]  # only the guarded position
    assert one(["x", ""]) == ["x", ""]
    many = compiled.converter([0, 1, 2], [(0, 1, str.upper, None)], [(1, quote), (2, quote)])
    assert many(["a", "b", "@c"]) == ["A", "b", "'@c"]
    assert many(["a", "-1", "c=d"]) == ["A", "'-1", "c=d"]
    assert many(["a", "b", "c"]) == ["A", "b", "c"]


# ---- bytes ---------------------------------------------------------------------------------------


def test_streamed_zip_reads_back_with_zip64_entries():
    buffer = ChunkBuffer()
    archive = open_zip(buffer)
    chunks = []
    with open_entry(archive, "a.csv") as entry:
        entry.write(b"x,y\r\n" * 10_000)
        chunks.append(buffer.take())
    archive.writestr("b.txt", "é")
    archive.close()
    chunks.append(buffer.take())
    data = b"".join(chunks)
    with zipfile.ZipFile(io.BytesIO(data)) as reopened:
        assert reopened.read("a.csv") == b"x,y\r\n" * 10_000
        assert reopened.read("b.txt") == "é".encode()
        assert reopened.testzip() is None


def test_xlsx_rows_escape_text_and_drop_forbidden_characters():
    cells = ["a<b & c>", "", 5, 1.5, True, dt.date(2024, 5, 7), "bell\x07"]
    row = xlsx.row_xml(2, cells, list("ABCDEFG"))
    assert row == (
        b'<row r="2"><c r="A2" t="inlineStr"><is><t>a&lt;b &amp; c&gt;</t></is></c>'
        b'<c r="C2"><v>5</v></c><c r="D2"><v>1.5</v></c><c r="E2" t="b"><v>1</v></c>'
        b'<c r="F2" s="1"><v>45419</v></c>'
        b'<c r="G2" t="inlineStr"><is><t>bell</t></is></c></row>'
    )
    assert xlsx.column_letters(28)[-3:] == ["Z", "AA", "AB"]


def test_where_sql_stays_on_sargable_conditions():
    # draft = false (not IS FALSE) so that PostgreSQL walks ix_submissions_form_id_draft_id.
    from server.exports import source

    form = type("F", (), {"id": 3})()
    layout = L.merge("f", [], {})
    where = source.conditions(form, layout, ExportOptions(), "postgresql")
    text = str(sa.and_(*where).compile(dialect=postgresql.dialect()))
    assert "submissions.draft = false" in text


def test_generated_xlsx_rows_equal_the_generic_writer():
    form = schema(
        field("/data/name"),
        field("/data/age", "int"),
        field("/data/when", "date"),
        field("/data/loc", "geopoint"),
        field("/data/many", "select_multiple", choices="l"),
        choices={"l": [{"name": "a", "labels": {}}, {"name": "b", "labels": {}}]},
    )
    plan = L.build_plan(
        L.merge("f", [form], {"7": "v1"}),
        ExportOptions(split_select_multiples=True, pii="plain"),
        "xlsx",
    )
    table = plan.main
    meta = [
        "1",
        "uuid:x",
        "2024-05-07T10:00:00.000Z",
        "3",
        "Tablette",
        "",
        "",
        "0",
        "7",
        "Awa",
        "0",
        "1",
        "false",
        "9",
        "",
    ]
    raw = [*meta, "A <b> & c", "034", "2024-05-07", "12.5 -8 0 5", "a"]
    cells = table.convert(raw)
    assert cells[1:4] == ["A <b> & c", 34, dt.date(2024, 5, 7)]
    assert cells[4:8] == [12.5, -8, 0, 5]
    assert cells[8:11] == ["a", 1, 0]
    letters = xlsx.column_letters(len(cells))
    assert xlsx.row_writer(table)(5, cells) == xlsx.row_xml(5, cells, letters)


@pytest.mark.parametrize(
    ("name", "segment"),
    [
        ("1715090512345.jpg", "1715090512345.jpg"),
        ("../../x.jpg", ".._.._x.jpg"),
        ("/etc/passwd", "_etc_passwd"),
        ("a\\b.jpg", "a_b.jpg"),
        ("..", "__"),
        (".", "_"),
        ("", "_"),
        ("c\x01d\u202e.jpg", "c_d_.jpg"),
        ("été.jpg", "été.jpg"),
    ],
)
def test_a_client_name_becomes_one_segment_of_an_archive_entry(name, segment):
    assert entry_segment(name) == segment


@pytest.mark.parametrize("name", ["media/../x", "../x", "/x", "media/a\\b", "media/", "a/./b"])
def test_no_zip_entry_can_leave_the_archives_folder(name):
    archive = open_zip(ChunkBuffer())
    with pytest.raises(ValueError, match="unsafe zip entry name"):
        open_entry(archive, name)


# ---- one way into exports --------------------------------------------------------------------

SERVER = Path(__file__).resolve().parents[2] / "server"


def _modules_where(found) -> set[str]:  # type: ignore[no-untyped-def]
    """Return the server's modules holding an AST node for which ``found(node)`` is true."""
    modules = set()
    for path in sorted(SERVER.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(found(node) for node in ast.walk(tree)):
            modules.add(str(path.relative_to(SERVER.parent)))
    return modules


def _calls(node: ast.AST, name: str) -> bool:
    if not isinstance(node, ast.Call):
        return False
    called = node.func
    return (isinstance(called, ast.Name) and called.id == name) or (
        isinstance(called, ast.Attribute) and called.attr == name
    )


def test_the_api_the_console_and_the_cli_export_through_one_service_entry():
    """Opening an export and recording it happen in one module, so no interface can skip
    the reader's rights or the audit event (issue 17)."""
    assert _modules_where(lambda n: _calls(n, "prepare")) == {"server/exports/services.py"}
    records_exports = _modules_where(
        lambda n: (
            _calls(n, "record")
            and any(isinstance(a, ast.Constant) and a.value == "submission.export" for a in n.args)
        )
    )
    assert records_exports == {"server/exports/services.py"}


def test_the_right_to_personal_data_is_named_in_one_rule():
    """Readers ask server/personal.py (``personal.may_see``), never the verb themselves."""
    naming = _modules_where(lambda n: isinstance(n, ast.Constant) and n.value == "submission.pii")
    assert naming == {"server/personal.py", "server/auth/roles.py"}


# ---- choice labels -----------------------------------------------------------------------------


def _labelled_plan(target: str = "csv", **options):
    fields = [
        field("/data/one", "select_one", choices="l"),
        field("/data/many", "select_multiple", choices="l"),
        field("/data/secret", "select_one", choices="l", pii=True),
        field("/data/free", "select_one"),  # choices from earlier answers: no fixed list
    ]
    choices = {
        "l": [
            {"name": "a", "labels": {"Français (fr)": "-Ah", "English (en)": "Ay"}},
            {"name": "b", "labels": {"Français (fr)": "Bé"}},
        ]
    }
    layout = L.merge(
        "f", [schema(*fields, choices=choices, languages=("Français (fr)", "English (en)"))], {}
    )
    plan = L.build_plan(
        layout, ExportOptions(**options), target, pseudonymise=lambda value: f"pid_{value}"
    )
    raw = [""] * L.META_WIDTH + ["a", "a  b zz", "b", "a"]
    return dict(zip(plan.main.headers, plan.main.convert(raw), strict=True))


def test_choice_labels_in_a_language_replace_names_but_never_pseudonyms():
    assert parse_options({"choiceLabels": "fr"}).choice_labels == "fr"
    assert parse_options({"choiceLabels": "false"}).choice_labels is None
    names = _labelled_plan()
    assert (names["one"], names["many"], names["secret"]) == ("a", "a b zz", "pid_b")
    french = _labelled_plan(choice_labels="fr")
    # A label is a coordinator's text: guarded in CSV; a choice outside the list stays a name.
    assert (french["one"], french["many"]) == ("'-Ah", "'-Ah; Bé; zz")
    assert french["secret"] == "pid_b"  # a personal answer's pseudonym, never its label
    assert french["free"] == "a"
    english = _labelled_plan(choice_labels="English (en)", pii="plain")
    # b has no English label: the form's default language's.
    assert (english["one"], english["many"], english["secret"]) == ("Ay", "Ay; Bé; zz", "Bé")
    workbook = _labelled_plan("xlsx", choice_labels="fr", split_select_multiples=True)
    assert (workbook["one"], workbook["many"]) == ("-Ah", "-Ah; Bé; zz")
    assert (workbook["many/a"], workbook["many/b"]) == (1, 1)
    with pytest.raises(BadExportOption) as refused:
        _labelled_plan(choice_labels="bambara")
    assert refused.value.details["field"] == "choiceLabels"


def test_split_geopoint_suffixes_follow_the_labels_language():
    layout = L.merge(
        "f",
        [schema(field("/data/place", "geopoint", labels={"fr": "Lieu", "Bambara (bm)": "Yɔrɔ"}),
                languages=("fr", "Bambara (bm)"))],
        {},
    )  # fmt: skip

    def headers(**options) -> list[str]:
        plan = L.build_plan(layout, ExportOptions(**options), "csv")
        return plan.main.headers[1:5]

    from flask_babel import Babel

    import server

    served = Flask(__name__)
    translations = Path(server.__file__).parent / "translations"
    Babel(served, locale_selector=lambda: "en", default_translation_directories=str(translations))
    with served.test_request_context():
        assert headers() == [
            f"place-{p}" for p in ("Latitude", "Longitude", "Altitude", "Accuracy")
        ]
        assert headers(headers="labels", language="fr")[3] == "Lieu-Précision"
        # A language the server does not speak: the reader's words.
        assert headers(headers="labels", language="bm")[3] == "Yɔrɔ-Accuracy"
