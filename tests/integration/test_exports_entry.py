"""One way into exports: the API, the console and the CLI go through the same service entry
(:func:`server.exports.services.export`), which checks the reader's rights and writes the audit
event. Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from server import db
from server.audit.models import AuditEvent
from server.exports.cli import export as export_command
from tests.support import exports as X
from tests.support import factories


@pytest.fixture
def suivi(app):
    with app.app_context(), db.database().session() as db_session:
        built = X.build_suivi(db_session)
        built.actors = {
            role: factories.user(
                db_session, f"{role}@example.org", role=role, project_id=built.project_id
            ).actor_id
            for role in ("manager", "viewer")
        }
        yield built


def _api(client, suivi, role: str, query: str):  # type: ignore[no-untyped-def]
    token = client.post(
        "/v1/sessions", json={"email": f"{role}@example.org", "password": factories.PASSWORD}
    ).json["token"]
    return client.get(
        f"/v1/projects/{suivi.project_id}/forms/suivi/submissions.csv{query}",
        headers={"Authorization": f"Bearer {token}"},
    )


def _console(client, suivi, role: str, query: str):  # type: ignore[no-untyped-def]
    page = client.get("/login")
    login_token = re.search(r'name="login_token" value="([^"]+)"', page.text)[1]
    signed_in = client.post(
        "/login",
        data={
            "email": f"{role}@example.org",
            "password": factories.PASSWORD,
            "login_token": login_token,
        },
    )
    assert signed_in.status_code == 303
    return client.get(f"/projects/{suivi.project_id}/forms/suivi/export/download{query}")


def _exports() -> list[tuple[str, int | None, int, dict]]:
    """Return the export events: (via, actor id, form id, details), oldest first."""
    with db.database().session(readonly=True) as db_session:
        rows = db_session.execute(
            sa.select(AuditEvent.actor_id, AuditEvent.form_id, AuditEvent.details)
            .where(AuditEvent.action == "submission.export")
            .order_by(AuditEvent.id)
        ).all()
    return [(details["via"], actor_id, form_id, details) for actor_id, form_id, details in rows]


def test_the_api_the_console_and_the_cli_each_record_the_export_naming_themselves(
    app, client, suivi, tmp_path
):
    assert _api(client, suivi, "manager", "").status_code == 200
    assert _console(app.test_client(), suivi, "manager", "?format=csv").status_code == 200
    command = app.test_cli_runner().invoke(
        export_command,
        [str(suivi.project_id), "suivi", "--format", "csv", "-o", str(tmp_path / "x")],
    )
    assert command.exit_code == 0, command.output
    events = _exports()
    assert [(via, actor_id) for via, actor_id, _, _ in events] == [
        ("api", suivi.actors["manager"]),
        ("console", suivi.actors["manager"]),
        ("cli", None),
    ]
    assert all(form_id == suivi.form.id and d["format"] == "csv" for _, _, form_id, d in events)
    # Each started from the reader's own default: a coordinator sees personal data in clear,
    # the operator gets pseudonyms unless --pii plain.
    assert [d["options"]["pii"] for *_, d in events] == ["plain", "plain", "pseudonymise"]


def test_personal_data_in_clear_is_refused_to_an_analyst_everywhere_and_nothing_is_recorded(
    app, client, suivi
):
    api = _api(client, suivi, "viewer", "?pii=plain")
    assert api.status_code == 403 and api.json["code"] == 403.1
    console = _console(app.test_client(), suivi, "viewer", "?format=csv&pii=plain")
    assert console.status_code == 403 and console.mimetype == "text/html"
    assert _exports() == []
    # Pseudonyms they may have, and that export is recorded.
    assert _api(client, suivi, "viewer", "").status_code == 200
    assert [d["options"]["pii"] for *_, d in _exports()] == ["pseudonymise"]


def test_keys_from_a_reader_who_may_not_decrypt_are_refused_before_anything_is_recorded(
    client, suivi
):
    refused = _api(client, suivi, "viewer", "?privateKey=not-a-key")
    assert refused.status_code == 403
    assert _exports() == []
