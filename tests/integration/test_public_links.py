"""Public links through the API: Central's shapes, audited, a token that fills one form."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from server.audit.models import AuditEvent
from tests.support import factories
from tests.support.openrosa import OPENROSA, new_instance_id, post_record, publish_form, record


@pytest.fixture
def manager(client, db_session):
    project = factories.project(db_session, "Saisie au bureau")
    factories.user(db_session, "coord@example.org", role="manager", project_id=project.id)
    token = client.post(
        "/v1/sessions", json={"email": "coord@example.org", "password": factories.PASSWORD}
    ).json["token"]
    form = publish_form(db_session, project.id)
    return {
        "project": project,
        "form": form,
        "headers": {"Authorization": f"Bearer {token}"},
        "links": f"/v1/projects/{project.id}/forms/{form.xml_form_id}/public-links",
    }


def _actions(db_session) -> list[str]:
    db_session.rollback()  # read what the requests committed since
    return list(db_session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)))


def test_create_list_and_delete_a_public_link_with_centrals_fields(client, db_session, manager):
    created = client.post(
        manager["links"],
        json={"displayName": "Saisie des fiches papier"},
        headers=manager["headers"],
    )
    assert created.status_code == 200, created.json
    body = created.json
    assert set(body) == {
        "id",
        "type",
        "displayName",
        "once",
        "token",
        "createdAt",
        "updatedAt",
        "deletedAt",
    }
    assert body["type"] == "public_link" and body["once"] is False and len(body["token"]) == 64
    once = client.post(
        manager["links"], json={"displayName": "Une fois", "once": True}, headers=manager["headers"]
    ).json
    assert once["once"] is True
    listed = client.get(manager["links"], headers=manager["headers"]).json
    assert [link["displayName"] for link in listed] == ["Une fois", "Saisie des fiches papier"]
    assert listed[1]["token"] == body["token"]
    assert "public_link.create" in _actions(db_session)

    deleted = client.delete(f"{manager['links']}/{body['id']}", headers=manager["headers"])
    assert deleted.json == {"success": True}
    assert [
        link["id"] for link in client.get(manager["links"], headers=manager["headers"]).json
    ] == [once["id"]]
    assert {"public_link.revoke", "public_link.delete"} <= set(_actions(db_session))
    project_id = manager["project"].id
    gone = client.get(f"/v1/key/{body['token']}/projects/{project_id}/forms/menage.xml")
    assert gone.status_code == 403


def test_bad_bodies_are_400_with_the_field_named(client, manager):
    missing = client.post(manager["links"], json={}, headers=manager["headers"])
    assert missing.status_code == 400 and missing.json["details"]["field"] == "displayName"
    wrong = client.post(
        manager["links"], json={"displayName": "x", "once": "yes"}, headers=manager["headers"]
    )
    assert wrong.status_code == 400 and wrong.json["details"]["field"] == "once"


def test_a_link_token_fills_its_form_and_edits_nothing(client, db_session, manager):
    link = client.post(
        manager["links"], json={"displayName": "Bureau"}, headers=manager["headers"]
    ).json
    base = f"/v1/key/{link['token']}/projects/{manager['project'].id}"
    assert client.get(f"{base}/forms/menage.xml").status_code == 200
    assert client.get(f"{base}/forms/menage/attachments/villages.csv").status_code == 200
    instance_id = new_instance_id()
    sent = post_record(client, base, record(instance_id, photo=None, audit=None))
    assert sent.status_code == 201, sent.data
    again = post_record(client, base, record(instance_id, photo=None, audit=None))
    assert again.status_code == 201  # a resend is a duplicate, as for Collect
    edit = record(
        new_instance_id(), name="Autre", photo=None, audit=None, deprecated_id=instance_id
    )
    refused = post_record(client, base, edit)
    assert refused.status_code == 403
    # Nothing else: no record, no list of records, no project, no other form.
    assert client.get(f"{base}/forms/menage/submissions").status_code in (403, 404)
    assert client.get(f"{base}/forms/menage/submissions/{instance_id}.xml").status_code in (
        403,
        404,
    )
    assert client.get(f"{base}/forms").status_code in (403, 404)
    assert client.get(manager["links"].replace("/v1", base, 1)).status_code in (403, 404)
    itself = client.get(f"/v1/key/{link['token']}/users/current").json  # its own name only
    assert itself["displayName"] == "Bureau" and "email" not in itself
    assert client.get(f"/v1/key/{link['token']}/projects").json == []
    assert client.head(f"{base}/submission", headers=OPENROSA).status_code == 204


def test_a_link_cannot_be_given_another_role(client, manager):
    link = client.post(
        manager["links"], json={"displayName": "Bureau"}, headers=manager["headers"]
    ).json
    project_id = manager["project"].id
    answer = client.post(
        f"/v1/projects/{project_id}/assignments/manager/{link['id']}", headers=manager["headers"]
    )
    assert answer.status_code == 404
