"""``merit export``: the API's exports from the command line, audited, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import zipfile

import pytest
import sqlalchemy as sa

from server import db
from server.audit.models import AuditEvent
from server.exports.cli import export
from tests.support import exports as X


@pytest.fixture
def suivi(app):
    with app.app_context(), db.database().session() as db_session:
        yield X.build_suivi(db_session)


def run(app, *args: str):
    return app.test_cli_runner().invoke(export, list(args))


def test_export_writes_the_file_and_the_audit_log(app, suivi, tmp_path):
    target = tmp_path / "suivi.zip"
    result = run(app, str(suivi.project_id), "suivi", "--format", "csv.zip", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert "4 records" in result.output
    tables = X.zip_tables(target.read_bytes())
    names = [r["respondent-name"] for r in X.as_dicts(tables["suivi.csv"])]
    assert all(n.startswith("pid_") for n in names)  # pseudonymised unless --pii plain
    with db.database().session(readonly=True) as db_session:
        details = db_session.scalars(
            sa.select(AuditEvent.details).where(AuditEvent.action == "submission.export")
        ).one()
    assert details["via"] == "cli" and details["format"] == "csv.zip"


def test_export_options_from_flags(app, suivi, tmp_path):
    target = tmp_path / "suivi.xlsx"
    result = run(
        app,
        str(suivi.project_id),
        "suivi",
        "--format",
        "xlsx",
        "-o",
        str(target),
        "--headers",
        "labels",
        "--language",
        "en",
        "--no-group-paths",
        "--review-state",
        "edited",
        "--pii",
        "plain",
        "--raw",
        "--choice-labels",
        "fr",
    )
    assert result.exit_code == 0, result.output
    import openpyxl

    sheet = openpyxl.load_workbook(io.BytesIO(target.read_bytes()))["suivi"]
    header = [c.value for c in sheet[1]]
    assert header[2:4] == ["Enumerator", "Name"]
    rows = list(sheet.iter_rows(min_row=2, values_only=True))
    assert [row[3] for row in rows] == ["Kadiatou"]
    assert rows[0][header.index("Consent")] == "Oui"  # English headers, French answers


def test_export_refuses_bad_input_with_a_message(app, suivi, tmp_path):
    target = str(tmp_path / "x.csv")
    unknown = run(app, str(suivi.project_id), "nothing", "--format", "csv", "-o", target)
    assert unknown.exit_code != 0 and "no form nothing" in unknown.output
    bad = run(
        app, str(suivi.project_id), "suivi", "--format", "csv", "-o", target, "--start", "hier"
    )
    assert bad.exit_code != 0 and "start" in bad.output
    media = run(app, str(suivi.project_id), "suivi", "--format", "media.zip", "-o", target)
    assert media.exit_code == 0
    assert zipfile.ZipFile(target).namelist() == ["media/a.jpg", "suivi - audit.csv"]
