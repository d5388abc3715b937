"""Forms that declare entities: publishing creates their lists and properties (issue 20, 1).

Forms are uploaded as coordinators upload them (XLSForm, compiled by pyxform, through the
API). Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from server import db
from server.audit.models import AuditEvent
from tests.support import entity_forms, factories


@pytest.fixture
def manager(client, db_session):
    project = factories.project(db_session)
    factories.user(db_session, "coord@example.org", role="manager", project_id=project.id)
    return {"project": project.id, "headers": entity_forms.login(client, "coord@example.org")}


def _list(client, manager, name="participants"):
    return client.get(
        f"/v1/projects/{manager['project']}/datasets/{name}", headers=manager["headers"]
    )


def test_publishing_a_form_creates_its_list_and_properties_audited(client, manager):
    draft = entity_forms.upload(
        client,
        manager["headers"],
        manager["project"],
        entity_forms.registration_form(),
        publish=False,
    )
    assert draft.status_code == 200, draft.json
    # A draft creates nothing yet (Central publishes the list with the form).
    assert _list(client, manager).status_code == 404
    published = client.post(
        f"/v1/projects/{manager['project']}/forms/registration/draft/publish",
        headers=manager["headers"],
    )
    assert published.status_code == 200, published.json
    found = _list(client, manager).json
    assert [p["name"] for p in found["properties"]] == ["full_name", "code", "site"]
    events = (
        db.session()
        .execute(sa.select(AuditEvent.action, AuditEvent.details).order_by(AuditEvent.id))
        .all()
    )
    actions = [a for a, _ in events]
    assert "dataset.create" in actions and "dataset.update" in actions
    created = next(d for a, d in events if a == "dataset.create")
    assert created["name"] == "participants" and created["form"] == "registration"


def test_a_new_version_adds_only_new_properties(client, manager):
    headers, project = manager["headers"], manager["project"]
    assert (
        entity_forms.upload(client, headers, project, entity_forms.registration_form()).status_code
        == 200
    )
    draft = client.post(
        f"/v1/projects/{project}/forms/registration/draft",
        data=entity_forms.registration_form("2", sex=True).encode(),
        headers={**headers, "Content-Type": "text/markdown"},
    )
    assert draft.status_code == 200, draft.json
    published = client.post(
        f"/v1/projects/{project}/forms/registration/draft/publish", headers=headers
    )
    assert published.status_code == 200, published.json
    names = [p["name"] for p in _list(client, manager).json["properties"]]
    assert names == ["full_name", "code", "site", "sex"]
    updates = (
        db.session()
        .scalars(sa.select(AuditEvent.details).where(AuditEvent.action == "dataset.update"))
        .all()
    )
    assert [d["properties"] for d in updates] == [["full_name", "code", "site"], ["sex"]]


def test_a_form_reading_the_list_is_linked_to_it_and_publishes_without_a_file(client, manager):
    headers, project = manager["headers"], manager["project"]
    # The review form updates the list, and reads it as participants.csv: publishing it
    # creates the list and links the file, so nothing is missing.
    answer = entity_forms.upload(client, headers, project, entity_forms.REVIEW)
    assert answer.status_code == 200, answer.json
    files = client.get(f"/v1/projects/{project}/forms/review/attachments", headers=headers).json
    assert files == [
        {
            "name": "participants.csv",
            "type": "file",
            "hash": None,
            "exists": True,
            "blobExists": False,
            "datasetExists": True,
            "updatedAt": files[0]["updatedAt"],
        }
    ]
    names = [p["name"] for p in _list(client, manager).json["properties"]]
    assert names == ["last_review_date", "risk_status"]
    # An upsert form declares both actions and adds its property.
    assert entity_forms.upload(client, headers, project, entity_forms.UPSERT).status_code == 200
    names = [p["name"] for p in _list(client, manager).json["properties"]]
    assert names == ["last_review_date", "risk_status", "code"]


def test_names_differing_only_by_case_are_refused_and_nothing_is_published(client, manager):
    headers, project = manager["headers"], manager["project"]
    made = client.post(
        f"/v1/projects/{project}/datasets", json={"name": "Participants"}, headers=headers
    )
    assert made.status_code == 200
    answer = entity_forms.upload(client, headers, project, entity_forms.registration_form())
    assert answer.status_code == 409 and answer.json["code"] == 409.16, answer.json
    assert _list(client, manager).status_code == 404
    forms = client.get(f"/v1/projects/{project}/forms", headers=headers).json
    assert forms == []
