"""Records create and update entities in their own transaction (issue 20, item 2).

Records are sent as ODK Collect sends them (multipart POST to a tablet's OpenRosa address),
by app users assigned to the forms; forms are XLSForms uploaded through the API. Every test
runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import uuid as uuidlib

import pytest
import sqlalchemy as sa

from server import db
from server.audit.models import AuditEvent
from server.auth import services as accounts
from server.entities import records
from server.entities.models import Entity, EntityBacklog, EntityVersion
from server.forms.models import Form
from server.submissions.models import Submission
from tests.support import entity_forms, factories
from tests.support.entity_forms import registration, review, send


@pytest.fixture
def programme(client, db_session):
    """A project with the registration, review and upsert forms, and three tablets."""
    project = factories.project(db_session)
    factories.user(db_session, "coord@example.org", role="manager", project_id=project.id)
    headers = entity_forms.login(client, "coord@example.org")
    for form in (entity_forms.registration_form(), entity_forms.REVIEW, entity_forms.UPSERT):
        answer = entity_forms.upload(client, headers, project.id, form)
        assert answer.status_code == 200, answer.json
    tablets = []
    for n in (1, 2, 3):
        app_user, token = factories.app_user(db_session, project.id, f"Tablette {n}")
        for form in db_session.scalars(sa.select(Form).where(Form.project_id == project.id)):
            accounts.assign(db_session, app_user.actor_id, "app-user", form_id=form.id, by=None)
        db_session.commit()
        tablets.append(f"/v1/key/{token}/projects/{project.id}")
    return {"project": project.id, "headers": headers, "tablets": tablets}


def _versions(uuid: str) -> list[EntityVersion]:
    return list(
        db.session().scalars(
            sa.select(EntityVersion)
            .join(Entity, Entity.id == EntityVersion.entity_id)
            .where(Entity.uuid == uuid)
            .order_by(EntityVersion.version)
        )
    )


def _entity(uuid: str) -> Entity | None:
    return db.session().execute(sa.select(Entity).where(Entity.uuid == uuid)).scalar_one_or_none()


def _actions() -> list[str]:
    return list(db.session().scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)))


def _created(client, programme, tablet=0, **kwargs) -> str:
    uuid = str(uuidlib.uuid4())
    answer = send(client, programme["tablets"][tablet], registration(uuid, **kwargs))
    assert answer.status_code == 201, answer.data
    return uuid


def test_a_record_creates_its_entity_once_whatever_the_resends(client, programme):
    uuid = str(uuidlib.uuid4())
    xml = registration(f"uuid:{uuid.upper()}", full_name="Awa Traoré", code="P-001")
    for _ in range(3):  # Collect resends when it never saw the answer
        assert send(client, programme["tablets"][0], xml).status_code == 201
    (version,) = _versions(uuid)
    assert version.label == "P-001 Awa Traoré" and version.version == 1
    assert version.data == {"full_name": "Awa Traoré", "code": "P-001", "site": "Ségou"}
    submission_id = db.session().scalar(sa.select(Submission.id))
    assert version.submission_id == submission_id
    assert version.source["submission"]["instanceId"].startswith("uuid:")
    assert _actions().count("entity.create") == 1
    # The API shows it as Central does.
    shown = client.get(
        f"/v1/projects/{programme['project']}/datasets/participants/entities/{uuid}",
        headers=programme["headers"],
    ).json
    assert shown["currentVersion"]["label"] == "P-001 Awa Traoré"
    assert shown["conflict"] is None


def test_an_update_writes_the_next_version_with_the_values_received(client, programme):
    uuid = _created(client, programme)
    answer = send(
        client,
        programme["tablets"][1],
        review(uuid, base_version=1, review_date="2026-03-01", status="high"),
    )
    assert answer.status_code == 201, answer.data
    first, second = _versions(uuid)
    assert (second.version, second.base_version, second.current) == (2, 1, True)
    assert second.label == first.label  # a blank label keeps the label
    assert second.data == {
        **first.data,
        "last_review_date": "2026-03-01",
        "risk_status": "high",
    }
    assert second.source["dataReceived"] == {
        "last_review_date": "2026-03-01",
        "risk_status": "high",
    }
    assert _entity(uuid).conflict is None


def test_an_update_based_on_an_older_version_is_applied_and_flagged(client, programme):
    uuid = _created(client, programme)
    base = programme["tablets"]
    assert send(client, base[1], review(uuid, base_version=1, status="high")).status_code == 201
    # Same base, a different value for a property changed since: a hard conflict.
    assert send(client, base[2], review(uuid, base_version=1, status="low")).status_code == 201
    third = _versions(uuid)[-1]
    assert (third.version, third.base_version) == (3, 1)
    assert third.conflicting_properties == ["risk_status"] and third.conflict == "hard"
    assert third.data["risk_status"] == "low"  # last write wins
    assert _entity(uuid).conflict == "hard"
    # A later stale update that agrees with the server is soft, but never lowers hard.
    assert send(client, base[2], review(uuid, base_version=2, status="low")).status_code == 201
    assert _versions(uuid)[-1].conflict == "hard" and _entity(uuid).conflict == "hard"


def test_a_stale_update_agreeing_with_the_server_is_a_soft_conflict(client, programme):
    uuid = _created(client, programme)
    base = programme["tablets"]
    assert send(client, base[1], review(uuid, base_version=1, status="high")).status_code == 201
    # Based on version 1, and the same values as the server's version 2.
    stale = review(uuid, base_version=1, status="high")
    assert send(client, base[2], stale).status_code == 201
    last = _versions(uuid)[-1]
    assert last.conflicting_properties == [] and last.conflict == "soft"
    assert _entity(uuid).conflict == "soft"


def test_offline_updates_arriving_in_reverse_order_are_applied_in_order(client, programme):
    uuid = _created(client, programme)
    tablet = programme["tablets"][1]
    branch = str(uuidlib.uuid4())
    # Two reviews made offline on one tablet: the second is based on the first (local v2).
    first = review(uuid, base_version=1, trunk_version=1, branch_id=branch, status="medium")
    second = review(
        uuid,
        base_version=2,
        trunk_version=1,
        branch_id=branch,
        status="high",
        review_date="2026-06-01",
    )
    assert send(client, tablet, second).status_code == 201  # stored, its update held
    assert [v.version for v in _versions(uuid)] == [1]
    assert db.session().scalar(sa.select(sa.func.count()).select_from(EntityBacklog)) == 1
    assert "submission.backlog.hold" in _actions()
    assert send(client, tablet, first).status_code == 201
    versions = _versions(uuid)
    assert [(v.version, v.base_version, v.branch_base_version) for v in versions] == [
        (1, None, None),
        (2, 1, 1),
        (3, 2, 2),
    ]
    assert versions[-1].data["risk_status"] == "high"
    assert versions[-1].data["last_review_date"] == "2026-06-01"
    assert db.session().scalar(sa.select(sa.func.count()).select_from(EntityBacklog)) == 0
    assert "submission.backlog.reprocess" in _actions()
    assert _entity(uuid).conflict is None
    # Resending either record changes nothing.
    assert send(client, tablet, first).status_code == 201
    assert send(client, tablet, second).status_code == 201
    assert len(_versions(uuid)) == 3


def test_a_held_update_is_applied_after_the_wait_on_the_latest_version(client, programme, app):
    uuid = _created(client, programme)
    branch = str(uuidlib.uuid4())
    held = review(uuid, base_version=3, trunk_version=1, branch_id=branch, status="high")
    assert send(client, programme["tablets"][1], held).status_code == 201
    session = db.session()
    # Not yet due: nothing happens.
    assert records.process_backlog(session, older_than=dt.timedelta(hours=1)) == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    assert records.process_backlog(session, older_than=dt.timedelta(hours=1), now=later) == 1
    versions = _versions(uuid)
    assert [v.version for v in versions] == [1, 2]
    assert versions[-1].data["risk_status"] == "high" and versions[-1].base_version == 1
    assert "submission.backlog.force" in _actions()
    assert session.scalar(sa.select(sa.func.count()).select_from(EntityBacklog)) == 0


def test_a_forced_update_creates_an_entity_whose_create_never_came(client, programme):
    uuid = str(uuidlib.uuid4())
    branch = str(uuidlib.uuid4())
    # An entity created offline, then reviewed offline; only the review arrives.
    held = review(uuid, base_version=1, trunk_version="", branch_id=branch, status="high")
    assert send(client, programme["tablets"][1], held).status_code == 201
    assert _entity(uuid) is None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    assert records.process_backlog(db.session(), older_than=dt.timedelta(0), now=later) == 1
    (made,) = _versions(uuid)
    assert made.label == records.AUTO_LABEL and made.source["forceProcessed"] is True
    # The real create arrives at last: applied as an update, flagged.
    xml = registration(uuid, full_name="Oumar Diallo", code="P-009")
    assert send(client, programme["tablets"][1], xml).status_code == 201
    versions = _versions(uuid)
    assert [v.version for v in versions] == [1, 2]
    assert versions[-1].label == "P-009 Oumar Diallo"
    assert _entity(uuid).conflict in ("soft", "hard")


def test_an_entity_that_cannot_be_applied_leaves_the_record_and_an_error(client, programme):
    missing = str(uuidlib.uuid4())
    answer = send(client, programme["tablets"][0], review(missing, base_version=1))
    assert answer.status_code == 201  # the record is kept (Central's rule)
    assert _entity(missing) is None
    error = (
        db.session()
        .execute(sa.select(AuditEvent).where(AuditEvent.action == "entity.error"))
        .scalar_one()
    )
    assert error.submission_id is not None and error.details["problem"] == "404.1"
    # No label: nothing is created, the record is kept.
    nameless = registration(str(uuidlib.uuid4()), full_name="", code="")
    assert send(client, programme["tablets"][0], nameless).status_code == 201
    assert db.session().scalar(sa.select(sa.func.count()).select_from(Entity)) == 0
    assert _actions().count("entity.error") == 2


def test_an_edit_changes_nothing_once_the_record_made_its_entity(client, programme):
    uuid = str(uuidlib.uuid4())
    instance = entity_forms.new_id()
    tablet = programme["tablets"][0]
    assert send(client, tablet, registration(uuid, instance_id=instance)).status_code == 201
    edit = registration(
        uuid, full_name="Awa T.", instance_id=entity_forms.new_id(), deprecated_id=instance
    )
    assert send(client, tablet, edit).status_code == 201
    (version,) = _versions(uuid)
    assert version.data["full_name"] == "Awa Traoré"
    # A record whose first version made nothing (no label) creates with its edit.
    other, first = str(uuidlib.uuid4()), entity_forms.new_id()
    assert send(client, tablet, registration(other, code="", full_name="", instance_id=first))
    assert _entity(other) is None
    fixed = registration(other, instance_id=entity_forms.new_id(), deprecated_id=first)
    assert send(client, tablet, fixed).status_code == 201
    assert [v.version for v in _versions(other)] == [1]


def test_a_list_requiring_approval_gets_the_entity_when_the_record_is_approved(client, programme):
    project, headers = programme["project"], programme["headers"]
    changed = client.patch(
        f"/v1/projects/{project}/datasets/participants",
        json={"approvalRequired": True},
        headers=headers,
    )
    assert changed.status_code == 200
    instance = entity_forms.new_id()
    uuid = _created(client, programme, instance_id=instance)
    assert _entity(uuid) is None
    reviewed = client.patch(
        f"/v1/projects/{project}/forms/registration/submissions/{instance}",
        json={"reviewState": "approved"},
        headers=headers,
    )
    assert reviewed.status_code == 200, reviewed.json
    assert [v.version for v in _versions(uuid)] == [1]
    # Approving again creates nothing more; updates are never gated by approval.
    client.patch(
        f"/v1/projects/{project}/forms/registration/submissions/{instance}",
        json={"reviewState": "hasIssues"},
        headers=headers,
    )
    client.patch(
        f"/v1/projects/{project}/forms/registration/submissions/{instance}",
        json={"reviewState": "approved"},
        headers=headers,
    )
    assert [v.version for v in _versions(uuid)] == [1]
    assert send(client, programme["tablets"][1], review(uuid, base_version=1)).status_code == 201
    assert [v.version for v in _versions(uuid)] == [1, 2]


def test_create_or_update_creates_then_updates(client, programme):
    tablet = programme["tablets"][0]
    uuid = str(uuidlib.uuid4())
    created = entity_forms.upsert("", uuid, code="P-100", create=True)
    assert send(client, tablet, created).status_code == 201
    assert [v.label for v in _versions(uuid)] == ["P-100"]
    updated = entity_forms.upsert(uuid, uuid, code="P-101", create=False)
    assert send(client, tablet, updated).status_code == 201
    assert [(v.version, v.label, v.data["code"]) for v in _versions(uuid)] == [
        (1, "P-100", "P-100"),
        (2, "P-101", "P-101"),
    ]


def test_the_programme_follow_up_as_the_issue_tells_it(client, programme):
    """Intake, then a second tablet's two offline reviews in reverse order, then a conflict."""
    tablets = programme["tablets"]
    uuid = _created(client, programme, tablet=0, full_name="Fatoumata Coulibaly", code="P-042")
    branch = str(uuidlib.uuid4())
    march = review(
        uuid,
        base_version=1,
        trunk_version=1,
        branch_id=branch,
        status="medium",
        review_date="2026-03-01",
    )
    june = review(
        uuid,
        base_version=2,
        trunk_version=1,
        branch_id=branch,
        status="low",
        review_date="2026-06-01",
    )
    assert send(client, tablets[1], june).status_code == 201
    assert send(client, tablets[1], march).status_code == 201
    # A third tablet, which had only version 1, records a review of its own.
    other = review(
        uuid,
        base_version=1,
        trunk_version=1,
        branch_id=str(uuidlib.uuid4()),
        status="high",
        review_date="2026-05-15",
    )
    assert send(client, tablets[2], other).status_code == 201
    chain = [
        (v.version, v.base_version, v.data.get("risk_status"), v.conflict) for v in _versions(uuid)
    ]
    assert chain == [
        (1, None, None, None),
        (2, 1, "medium", None),
        (3, 2, "low", None),
        (4, 1, "high", "hard"),
    ]
    assert _entity(uuid).conflict == "hard"
    listed = client.get(
        f"/v1/projects/{programme['project']}/datasets/participants/entities/{uuid}/versions",
        headers=programme["headers"],
    ).json
    assert [v["conflictingProperties"] for v in listed] == [
        None,
        None,
        None,
        ["last_review_date", "risk_status"],
    ]
    # The coordinator has looked at it: the conflict is resolved, the values kept.
    entity_url = f"/v1/projects/{programme['project']}/datasets/participants/entities/{uuid}"
    shown = client.get(entity_url, headers=programme["headers"]).json
    assert shown["conflict"] == "hard"
    resolved = client.patch(f"{entity_url}?resolve=true", headers=programme["headers"])
    assert resolved.status_code == 200, resolved.json
    assert resolved.json["conflict"] is None
    assert resolved.json["currentVersion"]["version"] == 4
    assert _entity(uuid).conflict is None and "entity.update.resolve" in _actions()


def test_merit_entities_backlog_and_the_periodic_pass_apply_what_waited(client, programme, app):
    import threading

    from server.entities import backlog
    from server.entities.cli import entities

    uuid = _created(client, programme)
    tablet = programme["tablets"][1]
    for n in (1, 2):  # two updates of two branches whose first updates never arrive
        held = review(uuid, base_version=5, trunk_version=1, branch_id=f"branch-{n}")
        assert send(client, tablet, held).status_code == 201
    runner = app.test_cli_runner()
    waiting = runner.invoke(entities, ["backlog"])
    assert waiting.exit_code == 0 and "applied 0 held update(s); 2 still waiting" in waiting.output
    app.config["ENTITY_BACKLOG_HOURS"] = 0
    stop = threading.Event()
    thread = backlog.start(app, interval=0.05, stop=stop)
    assert thread.daemon and thread.name == "entity-backlog"
    try:
        for _ in range(200):
            with app.app_context(), db.database().session() as session:
                if not records.held(session):
                    break
            thread.join(0.05)
    finally:
        stop.set()
        thread.join()
    with app.app_context(), db.database().session() as session:
        assert records.held(session) == []
    assert [v.version for v in _versions(uuid)] == [1, 2, 3]
    db.session().rollback()  # SQLite: the test's reads hold the write lock until they end
    done = runner.invoke(entities, ["backlog", "--all"])
    assert done.exit_code == 0 and "applied 0 held update(s); 0 still waiting" in done.output


# ---- the list as a form attachment (issue 20, item 3) -----------------------------------------

MANIFEST_NS = "{http://openrosa.org/xforms/xformsManifest}"


def _manifest(client, tablet: str, form_id: str = "review") -> dict:
    from lxml import etree

    answer = client.get(f"{tablet}/forms/{form_id}/manifest", headers={"X-OpenRosa-Version": "1.0"})
    assert answer.status_code == 200
    (media,) = etree.fromstring(answer.data).findall(f"{MANIFEST_NS}mediaFile")
    url = media.findtext(f"{MANIFEST_NS}downloadUrl")
    return {
        "type": media.get("type"),
        "name": media.findtext(f"{MANIFEST_NS}filename"),
        "hash": media.findtext(f"{MANIFEST_NS}hash"),
        "path": url[url.index("/v1/") :],
    }


def _download(client, path: str) -> bytes:
    answer = client.get(path, headers={"X-OpenRosa-Version": "1.0"})
    assert answer.status_code == 200, answer.data
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Content-Disposition"].startswith("attachment")
    return answer.data


def test_the_list_is_served_as_an_entity_list_whose_hash_is_the_md5_of_its_bytes(client, programme):
    import hashlib

    from server.entities import listfile

    listfile.forget()
    tablet = programme["tablets"][1]
    empty = _manifest(client, tablet)
    assert (empty["type"], empty["name"]) == ("entityList", "participants.csv")
    body = _download(client, empty["path"])
    assert body == (
        b"name,label,__version,__trunkVersion,__branchId,full_name,code,site,"
        b"last_review_date,risk_status\n"
    )
    assert empty["hash"] == "md5:" + hashlib.md5(body).hexdigest()
    first = _created(client, programme, full_name="Awa Traoré", code="P-001")
    second = _created(client, programme, full_name='Oumar, dit "Bah"', code="P-002")
    reviewed = review(first, base_version=1, status="high")
    assert send(client, tablet, reviewed).status_code == 201
    listed = _manifest(client, tablet)
    body = _download(client, listed["path"])
    assert listed["hash"] == "md5:" + hashlib.md5(body).hexdigest() != empty["hash"]
    assert body.decode().splitlines()[1:] == [
        f'{second},"P-002 Oumar, dit ""Bah""",1,1,,"Oumar, dit ""Bah""",P-002,Ségou,,',
        f"{first},P-001 Awa Traoré,2,2,,Awa Traoré,P-001,Ségou,2026-03-01,high",
    ]
    # Nothing changed: the same hash, from the cache; the same bytes.
    assert _manifest(client, tablet)["hash"] == listed["hash"]
    assert _download(client, listed["path"]) == body
    # A resend, or a record whose entity cannot be applied, leaves the file as it was.
    assert send(client, tablet, reviewed).status_code == 201
    unknown = review(str(uuidlib.uuid4()), base_version=1)
    assert send(client, tablet, unknown).status_code == 201
    assert _manifest(client, tablet)["hash"] == listed["hash"]
    assert _download(client, listed["path"]) == body
    # A real change changes it, and the bytes with it.
    assert send(client, tablet, review(first, base_version=2, status="low")).status_code == 201
    changed = _manifest(client, tablet)
    assert changed["hash"] != listed["hash"]
    assert changed["hash"] == "md5:" + hashlib.md5(_download(client, changed["path"])).hexdigest()
    # Deleting an entity through the API takes it out of the file.
    deleted = client.delete(
        f"/v1/projects/{programme['project']}/datasets/participants/entities/{second}",
        headers=programme["headers"],
    )
    assert deleted.status_code == 200
    after = _manifest(client, tablet)
    lines = _download(client, after["path"]).decode().splitlines()
    assert after["hash"] != changed["hash"] and [line[:36] for line in lines[1:]] == [first]


def test_a_list_requiring_approval_is_marked_so_in_the_manifest(client, programme):
    client.patch(
        f"/v1/projects/{programme['project']}/datasets/participants",
        json={"approvalRequired": True},
        headers=programme["headers"],
    )
    assert _manifest(client, programme["tablets"][0])["type"] == "approvalEntityList"


def test_collect_checks_the_entities_it_created_offline(client, programme):
    from lxml import etree

    tablet = programme["tablets"][1]
    kept = _created(client, programme)
    gone = _created(client, programme)
    never = str(uuidlib.uuid4())
    deleted = client.delete(
        f"/v1/projects/{programme['project']}/datasets/participants/entities/{gone}",
        headers=programme["headers"],
    )
    assert deleted.status_code == 200
    url = _manifest_integrity_url(client, tablet)
    assert url.endswith(f"/projects/{programme['project']}/datasets/participants/integrity")
    path = url[url.index("/v1/") :]
    answer = client.get(
        f"{path}?id={kept},{gone.upper()},{never},not-a-uuid", headers={"X-OpenRosa-Version": "1.0"}
    )
    assert answer.status_code == 200 and answer.headers["X-OpenRosa-Version"] == "1.0"
    found = {
        e.get("id"): e.findtext("deleted") for e in etree.fromstring(answer.data).iter("entity")
    }
    assert found == {kept: "false", gone: "true"}
    # A coordinator may ask too (refusals: test_route_matrix.py).
    by_manager = client.get(
        f"/v1/projects/{programme['project']}/datasets/participants/integrity?id={kept}",
        headers=programme["headers"],
    )
    assert by_manager.status_code == 200


def _manifest_integrity_url(client, tablet: str) -> str:
    from lxml import etree

    answer = client.get(f"{tablet}/forms/review/manifest", headers={"X-OpenRosa-Version": "1.0"})
    (media,) = etree.fromstring(answer.data).findall(f"{MANIFEST_NS}mediaFile")
    return media.findtext(f"{MANIFEST_NS}integrityUrl")
