"""The repository workflow: xlsforms/ -> merit forms build -> forms/ -> published on start."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from server import bootstrap, db, errors
from server.forms import folder, services
from server.forms.cli import forms as forms_cli
from server.forms.models import FormVersion
from tests.conftest import make_app
from tests.fixtures.forms import workbooks
from tests.support import factories

ROOT = Path(__file__).resolve().parents[2]
HOUSEHOLD_MEDIA = {"besoins.png": b"\x89PNG fr", "needs.png": b"\x89PNG en"}


def make_sources(folder: Path, household_version: str = "2024050701") -> Path:
    """Write an xlsforms/ folder: the household form with its media, and the simple form."""
    sources = folder / "xlsforms"
    media = sources / "media" / "household"
    media.mkdir(parents=True)
    markdown = workbooks.text("household.md").replace("2024050701", household_version)
    (sources / "household.xlsx").write_bytes(workbooks.xlsx(markdown))
    (sources / "simple.md").write_text(workbooks.simple("1"), encoding="utf-8")
    (media / "villages.csv").write_bytes(workbooks.data("villages.csv"))
    for name, content in HOUSEHOLD_MEDIA.items():
        (media / name).write_bytes(content)
    (media / "unused.txt").write_text("not referenced by the form")
    (sources / "~$household.xlsx").write_bytes(b"Excel lock file")
    return sources


def tree(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_build_writes_xforms_media_and_records_deterministically(tmp_path):
    sources = make_sources(tmp_path)
    out = tmp_path / "forms"
    built = folder.build(sources, out, validate=False)
    assert [b.form_id for b in built] == ["household", "simple"]
    first = tree(out)
    assert sorted(first) == [
        "household-media/besoins.png",
        "household-media/needs.png",
        "household-media/villages.csv",
        "household.json",
        "household.xml",
        "simple.json",
        "simple.xml",
    ]
    record = json.loads(first["household.json"])
    assert record["formId"] == "household" and record["version"] == "2024050701"
    assert record["source"] == "xlsforms/household.xlsx"
    assert record["pii"] == [
        "household/head",
        "household/member/member_name",
        "photo",
        "respondent/name",
    ]
    assert [m["name"] for m in record["media"]] == ["besoins.png", "needs.png", "villages.csv"]
    folder.build(sources, out, validate=False)
    assert tree(out) == first  # same sources, same bytes
    (sources / "simple.md").unlink()
    folder.build(sources, out, validate=False)
    assert "simple.xml" not in tree(out) and "simple.json" not in tree(out)


def test_build_failure_names_sheet_row_and_column_and_writes_nothing(tmp_path):
    sources = make_sources(tmp_path)
    shutil.copy(workbooks.HERE / "broken.md", sources / "broken.md")
    (sources / "media" / "household" / "needs.png").unlink()
    out = tmp_path / "forms"
    with pytest.raises(folder.BuildFailed) as caught:
        folder.build(sources, out, validate=False)
    problems = caught.value.problems
    assert problems["broken.md"][0].startswith("[sheet survey, row 3, column name]")
    assert problems["household.xlsx"] == [
        "media file missing from xlsforms/media/household/: needs.png"
    ]
    assert not out.exists()


def test_form_ids_that_are_not_plain_file_names_are_refused_and_write_nothing(tmp_path):
    """The API takes any formID Central takes; this folder names files after it, so ``../x``
    or ``a/b`` (from the settings sheet or a file name) must never become a path."""
    sources = make_sources(tmp_path)
    for name, form_id in (("up.md", "../../évasion"), ("sub.md", "a/b"), ("colon.md", "c:d")):
        (sources / name).write_text(workbooks.simple("1", form_id=form_id), encoding="utf-8")
    (sources / ".hidden.md").write_text(workbooks.simple("1", form_id=".x"), encoding="utf-8")
    (sources / "dot.md").write_text(workbooks.simple("1", form_id=".cache"), encoding="utf-8")
    before = tree(tmp_path)
    out = tmp_path / "forms"
    with pytest.raises(folder.BuildFailed) as caught:
        folder.build(sources, out, validate=False)
    assert sorted(caught.value.problems) == ["colon.md", "dot.md", "sub.md", "up.md"]
    assert all("cannot name a file" in p[0] for p in caught.value.problems.values())
    assert not out.exists() and tree(tmp_path) == before
    assert not any("évasion" in p.name for p in tmp_path.parent.rglob("*"))


def test_publishing_a_hand_written_xform_with_a_path_as_form_id_reads_no_other_file(
    tmp_path, session
):
    project = factories.project(session)
    out = tmp_path / "forms"
    folder.build(make_sources(tmp_path), out, validate=False)
    secret = tmp_path / "secret.json"
    secret.write_text('{"formId": "../secret", "source": "xlsforms/household.xlsx"}')
    text = (out / "simple.xml").read_text(encoding="utf-8")
    (out / "simple.xml").write_text(text.replace('id="simple"', 'id="../secret"'))
    outcomes = {o.form_id: o for o in folder.publish_outcomes(session, out, project.id)}
    assert outcomes["simple"].status == "failed"
    assert "cannot name a file" in outcomes["simple"].message
    assert services.find_form(session, project.id, "../secret") is None


@pytest.fixture
def session(app):
    with app.app_context(), db.database().session() as db_session:
        yield db_session


def versions(session) -> list[tuple[str, str]]:
    rows = session.execute(
        sa.select(FormVersion.version, FormVersion.title)
        .where(FormVersion.published_at.is_not(None))
        .order_by(FormVersion.id)
    )
    return [tuple(row) for row in rows]


def test_publish_is_idempotent_then_publishes_new_versions_and_refuses_reused_ones(
    tmp_path, session
):
    project = factories.project(session)
    sources = make_sources(tmp_path)
    out = tmp_path / "forms"
    folder.build(sources, out, validate=False)

    first = folder.publish_outcomes(session, out, project.id)
    assert [(o.form_id, o.status) for o in first] == [
        ("household", "created"),
        ("simple", "created"),
    ]
    form = services.find_form(session, project.id, "household")
    current = services.current_version(session, form)
    # Published from the source spreadsheet: it is kept, and so are the pii marks.
    assert services.source_file(session, current)[1] == "household.xlsx"
    assert {f["path"] for f in current.schema["fields"] if f["pii"]} >= {"/data/photo"}
    assert services.missing_media(session, current) == []
    assert current.schema["choiceLists"]["file:villages.csv"][0]["name"] == "segou"

    again = folder.publish_outcomes(session, out, project.id)
    assert {o.status for o in again} == {"unchanged"}
    assert len(versions(session)) == 2

    shutil.rmtree(sources)
    sources = make_sources(tmp_path, household_version="2024050702")
    folder.build(sources, out, validate=False)
    updated = folder.publish_outcomes(session, out, project.id)
    assert [(o.form_id, o.status) for o in updated] == [
        ("household", "updated"),
        ("simple", "unchanged"),
    ]
    assert [v for v, _ in versions(session)] == ["2024050701", "1", "2024050702"]

    # Changed XML under the version already published: a clear error, nothing published.
    (sources / "simple.md").write_text(workbooks.simple("1", extra_question=True), encoding="utf-8")
    folder.build(sources, out, validate=False)
    refused = {o.form_id: o for o in folder.publish_outcomes(session, out, project.id)}
    assert refused["simple"].status == "failed"
    expected = errors.VersionConflict(form_id="simple", version="1").render_message()
    assert refused["simple"].message == expected
    assert len(versions(session)) == 3
    assert folder.publish_folder(session, out, project.id) == ["household"]


def test_publishing_again_into_a_project_with_managed_encryption_changes_nothing(tmp_path, session):
    from server.crypto.managed import create_managed_key

    project = factories.project(session)
    out = tmp_path / "forms"
    folder.build(make_sources(tmp_path), out, validate=False)
    folder.publish_outcomes(session, out, project.id)
    create_managed_key(session, project, "une phrase secrète assez longue")
    keyed = versions(session)
    assert len(keyed) == 4  # each form got a keyed version (with a version suffix)
    # The server added the key to what it serves; forms/ did not change: nothing to publish.
    again = folder.publish_outcomes(session, out, project.id)
    assert {o.status for o in again} == {"unchanged"}
    assert versions(session) == keyed


def test_publishing_the_xform_alone_keeps_the_pii_marks_of_the_build(tmp_path, session):
    project = factories.project(session)
    sources = make_sources(tmp_path)
    out = tmp_path / "forms"
    folder.build(sources, out, validate=False)
    shutil.rmtree(sources)  # a deployment that ships forms/ without xlsforms/
    assert folder.publish_folder(session, out, project.id) == ["household", "simple"]
    form = services.find_form(session, project.id, "household")
    current = services.current_version(session, form)
    assert services.source_file(session, current) is None
    assert {f["path"] for f in current.schema["fields"] if f["pii"]} == {
        "/data/respondent/name",
        "/data/photo",
        "/data/household/head",
        "/data/household/member/member_name",
    }


def test_start_publishes_the_built_forms_into_the_default_project(database_url, tmp_path):
    out = tmp_path / "forms"
    folder.build(make_sources(tmp_path), out, validate=False)
    app = make_app(database_url, tmp_path, FORMS_DIR=str(out), ADMIN_PASSWORD="a-long-password")
    try:
        assert bootstrap.setup(app).forms == ["household", "simple"]
        assert bootstrap.setup(app).forms == ["household", "simple"]
        with app.app_context(), db.database().session() as session:
            assert len(versions(session)) == 2
            form = services.find_form(session, bootstrap.DEFAULT_PROJECT_ID, "simple")
            assert services.current_version(session, form).version == "1"
    finally:
        app.extensions["merit.db"].dispose()


def test_commands_build_and_publish(app, tmp_path):
    sources = make_sources(tmp_path)
    out = tmp_path / "built"
    runner = app.test_cli_runner()
    built = runner.invoke(
        forms_cli, ["build", "--source", str(sources), "--out", str(out), "--no-validate"]
    )
    assert built.exit_code == 0, built.output
    assert "household.xlsx -> " in built.output and "ODK Validate skipped" in built.output
    with app.app_context(), db.database().session() as session:
        project_id = factories.project(session).id
    published = runner.invoke(
        forms_cli, ["publish", "--project", str(project_id), "--dir", str(out)]
    )
    assert published.exit_code == 0, published.output
    assert "household: created (version 2024050701)" in published.output
    shutil.copy(workbooks.HERE / "broken.md", sources / "broken.md")
    failed = runner.invoke(
        forms_cli, ["build", "--source", str(sources), "--out", str(out), "--no-validate"]
    )
    assert failed.exit_code == 1 and "broken.md" in failed.output


def test_committed_forms_folder_is_up_to_date_with_xlsforms(tmp_path):
    """forms/ is generated: rebuild xlsforms/ and compare (run `make forms` when this fails)."""
    rebuilt = tmp_path / "forms"
    folder.build(ROOT / "xlsforms", rebuilt, validate=False)
    committed = ROOT / "forms"
    expected = tree(rebuilt)
    actual = tree(committed) if committed.is_dir() else {}
    actual = {name: data for name, data in actual.items() if not name.startswith(".")}
    assert sorted(actual) == sorted(expected), "forms/ is stale: run `merit forms build`"
    stale = [name for name in expected if actual[name] != expected[name]]
    assert not stale, f"forms/ is stale ({', '.join(stale)}): run `merit forms build`"
