"""App users through the API: create, list, revoke, assign to forms, Collect's QR settings."""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

import pytest

from server.openrosa import settings as collect
from server.openrosa.protocol import is_loopback
from tests.support import factories
from tests.support.openrosa import OPENROSA, publish_form


@pytest.fixture
def manager(client, db_session):
    project = factories.project(db_session, "Enquête Ségou")
    factories.user(db_session, "coord@example.org", role="manager", project_id=project.id)
    token = client.post(
        "/v1/sessions", json={"email": "coord@example.org", "password": factories.PASSWORD}
    ).json["token"]
    publish_form(db_session, project.id)
    return {
        "project": project,
        "headers": {"Authorization": f"Bearer {token}"},
        "base": f"/v1/projects/{project.id}",
    }


def test_create_list_and_delete_an_app_user_with_centrals_fields(client, manager):
    created = client.post(
        f"{manager['base']}/app-users",
        json={"displayName": "Tablette 7"},
        headers=manager["headers"],
    )
    assert created.status_code == 200
    body = created.json
    assert set(body) == {
        "projectId",
        "id",
        "type",
        "displayName",
        "token",
        "createdAt",
        "updatedAt",
        "deletedAt",
    }
    assert body["type"] == "field_key" and len(body["token"]) == 64
    listed = client.get(f"{manager['base']}/app-users", headers=manager["headers"]).json
    assert [a["displayName"] for a in listed] == ["Tablette 7"]
    deleted = client.delete(f"{manager['base']}/app-users/{body['id']}", headers=manager["headers"])
    assert deleted.json == {"success": True}
    assert (
        client.get(f"/v1/key/{body['token']}/projects/{body['projectId']}/formList").status_code
        == 403
    )
    assert client.get(f"{manager['base']}/app-users", headers=manager["headers"]).json == []


def test_a_form_assignment_decides_what_the_tablet_lists(client, manager):
    app_user = client.post(
        f"{manager['base']}/app-users", json={"displayName": "T1"}, headers=manager["headers"]
    ).json
    form_list = f"/v1/key/{app_user['token']}/projects/{app_user['projectId']}/formList"
    assert b"<formID>" not in client.get(form_list, headers=OPENROSA).data
    assigned = client.post(
        f"{manager['base']}/forms/menage/assignments/2/{app_user['id']}", headers=manager["headers"]
    )
    assert assigned.json == {"success": True}
    assert b"<formID>menage</formID>" in client.get(form_list, headers=OPENROSA).data
    listed = client.get(
        f"{manager['base']}/forms/menage/assignments/app-user", headers=manager["headers"]
    ).json
    assert listed == [{"actorId": app_user["id"], "roleId": 2}]
    client.delete(
        f"{manager['base']}/forms/menage/assignments/2/{app_user['id']}", headers=manager["headers"]
    )
    assert b"<formID>" not in client.get(form_list, headers=OPENROSA).data


def test_collect_settings_configure_the_tablet_in_one_scan(client, manager):
    app_user = client.post(
        f"{manager['base']}/app-users",
        json={"displayName": "Tablette 7"},
        headers=manager["headers"],
    ).json
    response = client.get(
        f"{manager['base']}/app-users/{app_user['id']}/collect-settings"
        "?image_size=very_small&admin_pw=s3cret-admin",
        headers=manager["headers"],
        base_url="https://collect.example.org",
    )
    assert response.status_code == 200
    decoded = collect.decode(response.json["payload"])
    assert decoded == response.json["settings"]
    general = decoded["general"]
    assert general["server_url"] == (
        f"https://collect.example.org/v1/key/{app_user['token']}/projects/{app_user['projectId']}"
    )
    assert general["username"] == general["password"] == ""
    assert general["form_update_mode"] == "match_exactly"
    assert general["image_size"] == "very_small"
    assert decoded["admin"] == {"change_server": False, "admin_pw": "s3cret-admin"}
    assert decoded["project"]["name"] == "Enquête Ségou – Tablette 7"


def test_collect_settings_refuse_values_collect_would_drop(client, manager):
    app_user = client.post(
        f"{manager['base']}/app-users", json={"displayName": "T"}, headers=manager["headers"]
    ).json
    response = client.get(
        f"{manager['base']}/app-users/{app_user['id']}/collect-settings?autosend=always",
        headers=manager["headers"],
    )
    assert response.status_code == 400
    assert "autosend" in response.json["message"]


def test_a_viewer_may_not_create_app_users(client, db_session, manager):
    factories.user(
        db_session, "analyste@example.org", role="viewer", project_id=manager["project"].id
    )
    token = client.post(
        "/v1/sessions", json={"email": "analyste@example.org", "password": factories.PASSWORD}
    ).json["token"]
    response = client.post(
        f"{manager['base']}/app-users",
        json={"displayName": "T"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 403
    assert response.json["code"] == 403.1


def _console(client, email: str, base_url: str) -> None:
    """Sign in to the console at ``base_url`` (its cookie is that host's)."""
    page = client.get("/login", base_url=base_url)
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)[1]
    signed = client.post(
        "/login",
        data={"email": email, "password": factories.PASSWORD, "login_token": token},
        base_url=base_url,
    )
    assert signed.status_code == 303


def test_the_qr_code_page_warns_when_tablets_could_not_reach_its_address(client, manager):
    """First run: the console opened at 127.0.0.1 puts that address in the QR code."""
    app_user = client.post(
        f"{manager['base']}/app-users",
        json={"displayName": "Tablette 8"},
        headers=manager["headers"],
    ).json
    page = f"/projects/{manager['project'].id}/app-users/{app_user['id']}"
    for base_url, language, words in (
        ("http://127.0.0.1:8080", "fr", "Les tablettes ne peuvent pas encore utiliser ce code QR"),
        ("http://localhost:8080", "en", "Tablets cannot use this QR code yet"),
        ("http://[::1]:8080", "en", "only this computer can reach"),
    ):
        _console(client, "coord@example.org", base_url)
        client.set_cookie("lang", language, domain=urlsplit(base_url).hostname)
        text = client.get(page, base_url=base_url).text
        warning = re.search(r'id="loopback-warning" role="alert">(.*?)</div>', text, re.S)
        assert warning and words in warning[1], (base_url, language)
        # The server's default MERIT_HOST is 127.0.0.1: both settings are named.
        assert "MERIT_PUBLIC_URL" in warning[1] and "MERIT_HOST=0.0.0.0" in warning[1]
        assert base_url in html.unescape(warning[1])
    for base_url in ("http://192.168.1.20:8080", "https://collect.example.org"):
        _console(client, "coord@example.org", base_url)
        text = client.get(page, base_url=base_url).text
        assert "loopback-warning" not in text and "<svg" in text, base_url


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://127.1.2.3", True),
        ("http://[::1]:8080/", True),
        ("http://localhost", True),
        ("http://app.localhost:8080", True),
        ("http://0.0.0.0:8080", True),
        ("http://192.168.1.20:8080", False),
        ("https://collect.example.org", False),
        ("http://10.0.0.5", False),
    ],
)
def test_loopback_addresses_are_recognised(url, loopback):
    assert is_loopback(url) is loopback
