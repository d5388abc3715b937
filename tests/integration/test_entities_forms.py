"""Forms that declare entities: publishing creates their lists and properties (issue 20, 1).

Forms are uploaded as coordinators upload them (XLSForm, compiled by pyxform, through the
API). Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

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


# ---- the programme's follow-up forms (issue 20, item 8) ---------------------------------------

ROOT = Path(__file__).resolve().parents[2]
PROGRAMME = ("participant_intake.xlsx", "risk_review.xlsx")


def test_the_programme_follow_up_forms_build_publish_and_follow_a_participant(
    client, db_session, tmp_path
):
    import hashlib
    import shutil
    import uuid as uuidlib

    from lxml import etree

    from server.auth import services as accounts
    from server.entities.models import Entity, EntityVersion
    from server.forms import folder
    from server.forms.models import Form

    sources = tmp_path / "xlsforms"
    sources.mkdir()
    for name in PROGRAMME:
        shutil.copy(ROOT / "xlsforms" / name, sources / name)
    built = folder.build(sources, tmp_path / "forms", validate=False)
    assert [b.form_id for b in built] == ["participant_intake", "risk_review"]
    project = factories.project(db_session)
    outcomes = folder.publish_outcomes(db_session, tmp_path / "forms", project.id)
    assert [o.status for o in outcomes] == ["created", "created"]
    again = folder.publish_outcomes(db_session, tmp_path / "forms", project.id)
    assert [o.status for o in again] == ["unchanged", "unchanged"]
    app_user, token = factories.app_user(db_session, project.id)
    for form in db_session.scalars(sa.select(Form).where(Form.project_id == project.id)):
        accounts.assign(db_session, app_user.actor_id, "app-user", form_id=form.id, by=None)
    db_session.commit()
    tablet = f"/v1/key/{token}/projects/{project.id}"

    uuid = str(uuidlib.uuid4())
    intake = (
        '<?xml version="1.0"?><data xmlns:jr="http://openrosa.org/javarosa" '
        'xmlns:orx="http://openrosa.org/xforms" id="participant_intake" version="2026120801">'
        "<start>2026-03-01T09:00:00.000Z</start><end>2026-03-01T09:10:00.000Z</end>"
        "<today>2026-03-01</today><deviceid>collect:AbC</deviceid><intro_note/>"
        "<identification><participant_code>SEG-0042</participant_code>"
        "<full_name>Fatoumata Coulibaly</full_name><sex>female</sex><age_group>age_18_24"
        "</age_group><site>segou_prison</site><entry_date>2026-02-20</entry_date>"
        "</identification><initial_status>new</initial_status>"
        f'<meta><entity dataset="participants" create="1" id="{uuid}"><label>SEG-0042</label>'
        f"</entity><instanceID>{entity_forms.new_id()}</instanceID>"
        "<instanceName>SEG-0042 - 2026-03-01</instanceName></meta></data>"
    ).encode()
    assert entity_forms.send(client, tablet, intake).status_code == 201

    # The review form's manifest carries the list; its CSV never holds the name.
    manifest = client.get(f"{tablet}/forms/risk_review/manifest")
    ns = "{http://openrosa.org/xforms/xformsManifest}"
    (media,) = etree.fromstring(manifest.data).findall(f"{ns}mediaFile")
    assert media.get("type") == "entityList"
    url = media.findtext(f"{ns}downloadUrl")
    csv_bytes = client.get(url[url.index("/v1/") :]).data
    assert media.findtext(f"{ns}hash") == "md5:" + hashlib.md5(csv_bytes).hexdigest()
    header, row = csv_bytes.decode().splitlines()
    assert header == (
        "name,label,__version,__trunkVersion,__branchId,code,sex,age_group,site,entry_date,"
        "risk_status,last_review_date"
    )
    assert row == f"{uuid},SEG-0042,1,1,,SEG-0042,female,age_18_24,segou_prison,2026-02-20,new,"
    assert "Coulibaly" not in csv_bytes.decode()

    review = (
        '<?xml version="1.0"?><data xmlns:jr="http://openrosa.org/javarosa" '
        'xmlns:orx="http://openrosa.org/xforms" id="risk_review" version="2026120801">'
        "<start>2026-06-01T09:00:00.000Z</start><end>2026-06-01T09:10:00.000Z</end>"
        f"<today>2026-06-01</today><deviceid>collect:AbC</deviceid><participant>{uuid}"
        "</participant><last_date/><last_status>new</last_status><participant_site>"
        "segou_prison</participant_site><last_review/><review><review_date>2026-06-01"
        "</review_date><risk_status>medium</risk_status><factors>isolation</factors>"
        "<observations>RAS</observations></review>"
        f'<meta><entity dataset="participants" update="1" baseVersion="1" trunkVersion="1" '
        f'branchId="{uuidlib.uuid4()}" id="{uuid}"/>'
        f"<instanceID>{entity_forms.new_id()}</instanceID></meta></data>"
    ).encode()
    assert entity_forms.send(client, tablet, review).status_code == 201
    current = db_session.execute(
        sa.select(EntityVersion)
        .join(Entity, Entity.id == EntityVersion.entity_id)
        .where(Entity.uuid == uuid, EntityVersion.current.is_(True))
    ).scalar_one()
    assert current.version == 2
    assert current.data["last_review_date"] == "2026-06-01"
    assert current.data["risk_status"] == "medium"
