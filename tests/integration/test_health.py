"""/healthz and /readyz, and errors that never leak a traceback."""

from __future__ import annotations

import io

import sqlalchemy as sa
from flask import Blueprint

from server import migrate
from server.db import create_engine
from tests.conftest import make_app
from tests.support.openrosa import OPENROSA, message_of


def test_healthz_answers_while_the_process_runs(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_checks_database_and_storage(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"database": "ok", "storage": "ok"}


def test_readyz_is_unavailable_when_neither_store_nor_spool_can_be_written(database_url, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the attachments folder should be")
    app = make_app(
        database_url, tmp_path, STORAGE_URL=str(blocker / "blobs"), SPOOL_DIR=str(blocker / "spool")
    )
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["storage"].startswith("unreachable")
    assert response.json["checks"]["database"] == "ok"


def test_readyz_stays_ready_but_degraded_while_the_spool_takes_attachments(database_url, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the attachments folder should be")
    app = make_app(database_url, tmp_path, STORAGE_URL=str(blocker / "blobs"))
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"]["storage"].startswith("degraded")


def test_readyz_is_unavailable_when_database_is_not_migrated(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    response = make_app(url, tmp_path).test_client().get("/readyz")
    assert response.status_code == 503
    assert "not migrated" in response.json["checks"]["database"]


def test_readyz_is_unavailable_when_database_is_unreachable(tmp_path):
    url = "postgresql://nobody@127.0.0.1:1/nothing"
    response = make_app(url, tmp_path).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["database"].startswith("unreachable")


def test_unexpected_error_gives_a_stable_message_and_no_traceback(bare_app):
    boom = Blueprint("boom", __name__)

    @boom.get("/v1/boom")
    def explode():
        raise RuntimeError("secret internal detail")

    bare_app.register_blueprint(boom)
    response = bare_app.test_client().get("/v1/boom")
    assert response.status_code == 500
    assert response.json["code"] == 500.1
    assert "secret internal detail" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)


def test_unknown_api_path_is_a_json_404(bare_app):
    response = bare_app.test_client().get("/v1/nothing/here")
    assert response.status_code == 404
    assert response.json["code"] == 404.1


def test_messages_follow_the_clients_language(bare_app):
    client = bare_app.test_client()
    english = client.get("/v1/nothing", headers={"Accept-Language": "en"}).json["message"]
    french = client.get("/v1/nothing", headers={"Accept-Language": "fr"}).json["message"]
    assert english == "Could not find what you were looking for."
    assert french != english


def test_migration_head_is_single():
    assert migrate.head_revision()


def test_wal_mode_on_sqlite(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as connection:
        assert connection.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_a_database_away_is_503_with_retry_after_for_tablets_and_the_api(tmp_path):
    # PostgreSQL restarting or unreachable: a passing state, so Collect and API clients are
    # told to come back (503, Retry-After), not that the server is broken (500).
    client = make_app("postgresql://nobody@127.0.0.1:1/nothing", tmp_path).test_client()
    body = {"xml_submission_file": (io.BytesIO(b'<data id="menage"/>'), "submission.xml")}
    tablet = client.post(
        "/v1/key/" + "a" * 64 + "/projects/1/submission",
        data=body,
        headers={**OPENROSA, "Accept-Language": "fr"},
    )
    assert tablet.status_code == 503
    assert tablet.headers["Retry-After"] == "10"
    assert tablet.mimetype == "text/xml"
    assert "reste sur la tablette" in message_of(tablet)

    api = client.get("/v1/projects", headers={"Authorization": "Bearer " + "b" * 64})
    assert api.status_code == 503
    assert api.headers["Retry-After"] == "10"
    assert api.json["code"] == 503.4


def test_a_database_never_migrated_is_a_500_not_a_503(tmp_path):
    # SQLite says OperationalError for a missing table too: that is a broken deployment, which
    # waiting will not mend, so it must not be dressed up as a passing outage.
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    api = (
        make_app(url, tmp_path)
        .test_client()
        .get("/v1/projects", headers={"Authorization": "Bearer " + "b" * 64})
    )
    assert api.status_code == 500
    assert api.json["code"] == 500.1
