"""A coordinator of any project can upload a workbook: its limits hold whatever the parts' names.

Hole 8 of issue 16: a workbook whose survey sheet part had an unusual name skipped the row and
size limits (README, Forms: sheets over 50,000 rows or 1,000 columns, workbooks with a DTD), and
200,000 rows held a worker for minutes. The sheets are now found as openpyxl finds them
(through the workbook's relationships, wherever the workbook part is) and every XML part of the
zip is read for rows and DTDs, in whatever encoding it is written; each is refused with a 400
naming the limit, before pyxform or openpyxl reads the workbook, and nothing is stored.

The uploader is the coordinator of the other project, uploading to their own project: any
coordinator can do this.
"""

from __future__ import annotations

import pytest

from server.forms.compiler import MAX_SHEET_ROWS
from tests.fixtures.forms import workbooks

pytestmark = pytest.mark.slow


def _upload(site, workbook: bytes):
    return site.api("other_manager").post(
        f"{site.url}/v1/projects/{site.other_project_id}/forms",
        data=workbook,
        headers={"Content-Type": workbooks.XLSX_TYPE, "Accept-Language": "en"},
        timeout=300,
    )


def _still_serving(site) -> None:
    listed = site.api("other_manager").get(
        f"{site.url}/v1/projects/{site.other_project_id}/forms", timeout=30
    )
    assert listed.status_code == 200, listed.text


@pytest.mark.parametrize(
    ("part", "workbook_part"),
    [
        ("xl/zzz.xml", None),
        ("xl/worksheets/sheet1.bin", None),
        ("survey", "book/contents.xml"),
    ],
)
def test_a_sheet_under_any_part_name_is_held_to_the_row_limit(site, part, workbook_part):
    before = site.count("forms")
    answer = _upload(site, workbooks.moved_survey(200_000, part, workbook_part=workbook_part))
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert problem["code"] == 400.15
    # The server's own limit, named: the refusal came before pyxform read the sheet.
    (error,) = problem["details"]["errors"]
    assert "rows" in error["message"] and str(MAX_SHEET_ROWS) in error["message"], error
    assert error["sheet"] == "survey"
    assert site.count("forms") == before
    _still_serving(site)


def test_a_sheet_under_another_name_within_the_limits_is_still_read(site):
    answer = _upload(site, workbooks.moved_survey(20, "xl/zzz.xml"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["xmlFormId"] == "simple"


def test_a_dtd_written_in_utf16_is_refused_as_in_utf8(site):
    before = site.count("forms")
    answer = _upload(site, workbooks.utf16_with_dtd())
    assert answer.status_code == 400, answer.text
    (error,) = answer.json()["details"]["errors"]
    assert "DTD" in error["message"], error
    assert site.count("forms") == before
    _still_serving(site)
