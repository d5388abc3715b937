"""Projects, users and site-wide roles through the API, in ODK Central's shapes."""

from __future__ import annotations

import pytest

from tests.support import factories
from tests.support.factories import PASSWORD

PROJECT_KEYS = {
    "id",
    "name",
    "description",
    "archived",
    "keyId",
    "createdAt",
    "updatedAt",
    "deletedAt",
}


def bearer(client, email):
    token = client.post("/v1/sessions", json={"email": email, "password": PASSWORD}).json["token"]
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin(client, db_session):
    factories.user(db_session, "admin@example.org", role="admin")
    return bearer(client, "admin@example.org")


def test_an_administrator_creates_renames_archives_and_deletes_a_project(client, admin):
    created = client.post("/v1/projects", json={"name": "Évaluation des besoins"}, headers=admin)
    assert created.status_code == 200
    assert set(created.json) == PROJECT_KEYS
    pid = created.json["id"]
    renamed = client.patch(
        f"/v1/projects/{pid}", json={"name": "Besoins 2026", "archived": True}, headers=admin
    )
    assert renamed.json["name"] == "Besoins 2026" and renamed.json["archived"] is True
    extended = client.get(
        f"/v1/projects/{pid}", headers={**admin, "X-Extended-Metadata": "true"}
    ).json
    assert extended["forms"] == 0 and extended["appUsers"] == 0
    assert extended["lastSubmission"] is None
    assert client.delete(f"/v1/projects/{pid}", headers=admin).json == {"success": True}
    assert client.get(f"/v1/projects/{pid}", headers=admin).status_code == 404


def test_a_manager_sees_only_their_projects_and_cannot_create_one(client, db_session):
    own = factories.project(db_session, "own")
    factories.project(db_session, "other")
    factories.user(db_session, "coord@example.org", role="manager", project_id=own.id)
    headers = bearer(client, "coord@example.org")
    assert [p["name"] for p in client.get("/v1/projects", headers=headers).json] == ["own"]
    assert client.post("/v1/projects", json={"name": "x"}, headers=headers).status_code == 403
    assert client.get(f"/v1/projects/{own.id + 1}", headers=headers).status_code == 403


def test_a_project_needs_a_name(client, admin):
    response = client.post("/v1/projects", json={"name": "  "}, headers=admin)
    assert response.status_code == 400
    assert response.json["code"] == 400.2


def test_users_are_created_listed_and_deleted_by_an_administrator(client, admin):
    created = client.post(
        "/v1/users",
        json={"email": "Analyste@Example.org", "password": "une phrase assez longue"},
        headers=admin,
    )
    assert created.status_code == 200
    assert created.json["email"] == "analyste@example.org"
    listed = client.get("/v1/users?q=analyste", headers=admin).json
    assert [u["email"] for u in listed] == ["analyste@example.org"]
    again = client.post("/v1/users", json={"email": "analyste@example.org"}, headers=admin)
    assert again.status_code == 409 and again.json["code"] == 409.3
    uid = created.json["id"]
    assert client.delete(f"/v1/users/{uid}", headers=admin).json == {"success": True}
    login = client.post(
        "/v1/sessions",
        json={"email": "analyste@example.org", "password": "une phrase assez longue"},
    )
    assert login.status_code == 401


def test_a_user_changes_their_password_and_other_sessions_end(client, db_session):
    user = factories.user(db_session, "coord@example.org")
    first, second = bearer(client, "coord@example.org"), bearer(client, "coord@example.org")
    wrong = client.put(
        f"/v1/users/{user.actor_id}/password",
        json={"old": "not it", "new": "a new long password"},
        headers=first,
    )
    assert wrong.status_code == 401
    short = client.put(
        f"/v1/users/{user.actor_id}/password", json={"old": PASSWORD, "new": "short"}, headers=first
    )
    assert short.status_code == 400 and short.json["code"] == 400.21
    changed = client.put(
        f"/v1/users/{user.actor_id}/password",
        json={"old": PASSWORD, "new": "a new long password"},
        headers=first,
    )
    assert changed.json == {"success": True}
    assert client.get("/v1/users/current", headers=second).status_code == 401
    assert (
        client.post(
            "/v1/sessions", json={"email": "coord@example.org", "password": "a new long password"}
        ).status_code
        == 200
    )


def test_a_user_cannot_read_or_change_another_user(client, db_session):
    factories.user(db_session, "a@example.org")
    other = factories.user(db_session, "b@example.org")
    headers = bearer(client, "a@example.org")
    assert client.get(f"/v1/users/{other.actor_id}", headers=headers).status_code == 403
    assert (
        client.put(
            f"/v1/users/{other.actor_id}/password",
            json={"old": PASSWORD, "new": "another long one"},
            headers=headers,
        ).status_code
        == 403
    )
    assert client.get("/v1/users", headers=headers).status_code == 403


def test_the_last_administrator_cannot_be_removed(client, db_session, admin):
    me = client.get("/v1/users/current", headers=admin).json
    response = client.delete(f"/v1/assignments/admin/{me['id']}", headers=admin)
    assert response.status_code == 409
    other = factories.user(db_session, "second@example.org")
    assert client.post(f"/v1/assignments/admin/{other.actor_id}", headers=admin).json == {
        "success": True
    }
    assert client.delete(f"/v1/assignments/1/{me['id']}", headers=admin).json == {"success": True}
    roles = client.get("/v1/roles", headers=bearer(client, "second@example.org")).json
    assert [r["system"] for r in roles][:3] == ["admin", "app-user", "manager"]
