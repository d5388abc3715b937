"""Submissions over the REST API in ODK Central's shapes, with its error codes.

Every test runs on SQLite and PostgreSQL (the ``client`` fixture).
"""

from __future__ import annotations

import pytest

from server import db
from tests.support import factories
from tests.support.openrosa import (
    FORM_ID,
    jpeg,
    new_instance_id,
    publish_form,
    record,
)

SUBMISSION_KEYS = {
    "instanceId",
    "submitterId",
    "deviceId",
    "userAgent",
    "reviewState",
    "instanceName",
    "createdAt",
    "updatedAt",
    "deletedAt",
    # Not Central's: files sent for no question, counted (issue 19, item 9); clients ignore it.
    "droppedAttachments",
}
XML = {"Content-Type": "application/xml"}


def login(client, email: str) -> dict[str, str]:
    answer = client.post("/v1/sessions", json={"email": email, "password": factories.PASSWORD})
    assert answer.status_code == 200, answer.json
    return {"Authorization": f"Bearer {answer.json['token']}"}


@pytest.fixture
def setup(app, client):
    with app.app_context(), db.database().session() as db_session:
        project = factories.project(db_session)
        form = publish_form(db_session, project.id)
        factories.user(db_session, "admin@example.org", role="admin")
        factories.user(db_session, "coord@example.org", role="manager", project_id=project.id)
        factories.user(db_session, "analyste@example.org", role="viewer", project_id=project.id)
        base = f"/v1/projects/{project.id}/forms/{FORM_ID}"
        return {"project": project.id, "form": form.id, "base": base}


@pytest.fixture
def coord(client, setup):
    return login(client, "coord@example.org")


def create(client, setup, headers, instance_id=None, **fields):
    instance_id = instance_id or new_instance_id()
    answer = client.post(
        setup["base"] + "/submissions?deviceID=collect:abc",
        data=record(instance_id, **fields),
        headers={**headers, **XML},
    )
    return instance_id, answer


def test_create_from_xml_answers_a_submission_with_every_key(client, setup, coord):
    instance_id, answer = create(client, setup, coord, photo=None, audit=None)
    assert answer.status_code == 200, answer.json
    body = answer.json
    assert set(body) == SUBMISSION_KEYS
    assert body["instanceId"] == instance_id
    assert body["deviceId"] == "collect:abc"
    assert body["reviewState"] is None and body["updatedAt"] is None
    assert body["instanceName"] == "Awa Traoré"
    assert body["createdAt"].endswith("Z") and len(body["createdAt"]) == 24
    assert body["droppedAttachments"] == {"count": 0, "names": []}
    fetched = client.get(f"{setup['base']}/submissions/{instance_id}", headers=coord)
    assert fetched.json == body
    xml = client.get(f"{setup['base']}/submissions/{instance_id}.xml", headers=coord)
    assert xml.status_code == 200 and xml.content_type == "application/xml"
    assert xml.data == record(instance_id, photo=None, audit=None)


def test_an_instance_id_already_here_is_409_3_even_with_the_same_xml(client, setup, coord):
    instance_id, first = create(client, setup, coord, photo=None, audit=None)
    assert first.status_code == 200
    _, same = create(client, setup, coord, instance_id, photo=None, audit=None)
    assert same.status_code == 409 and same.json["code"] == 409.3
    assert instance_id in same.json["message"]
    _, different = create(client, setup, coord, instance_id, name="Autre", photo=None, audit=None)
    assert different.status_code == 409 and different.json["code"] == 409.3
    listed = client.get(setup["base"] + "/submissions", headers=coord).json
    assert [s["instanceId"] for s in listed] == [instance_id]


def test_bad_bodies_are_400_and_store_nothing(client, setup, coord):
    url = setup["base"] + "/submissions"
    empty = client.post(url, data=b"", headers={**coord, **XML})
    assert empty.status_code == 400 and empty.json["code"] == 400.2
    broken = client.post(url, data=b"<data id='menage'><oops></data>", headers={**coord, **XML})
    assert broken.status_code == 400 and broken.json["code"] == 400.1
    other_form = client.post(
        url, data=record(new_instance_id(), form_id="autre"), headers={**coord, **XML}
    )
    assert other_form.status_code == 400 and other_form.json["code"] == 400.8
    assert other_form.json["details"]["field"] == "form id"
    hostile = client.post(
        url,
        data=b'<!DOCTYPE x [<!ENTITY a "b">]><data id="menage">&a;</data>',
        headers={**coord, **XML},
    )
    assert hostile.status_code == 400
    unknown_version = client.post(
        url, data=record(new_instance_id(), version="1999"), headers={**coord, **XML}
    )
    assert unknown_version.status_code == 404 and unknown_version.json["code"] == 404.6
    assert client.get(url, headers=coord).json == []


def test_who_may_do_what(client, setup, coord):
    url = setup["base"] + "/submissions"
    anonymous = client.get(url)
    assert anonymous.status_code == 401 and anonymous.json["code"] == 401.4
    bad_token = client.get(url, headers={"Authorization": "Bearer nope"})
    assert bad_token.status_code == 401
    viewer = login(client, "analyste@example.org")
    assert client.get(url, headers=viewer).status_code == 200
    refused = client.post(url, data=record(new_instance_id()), headers={**viewer, **XML})
    assert refused.status_code == 403 and refused.json["code"] == 403.1
    missing = client.get(
        f"/v1/projects/{setup['project']}/forms/nothing/submissions", headers=coord
    )
    assert missing.status_code == 404 and missing.json["code"] == 404.1
    unknown = client.get(url + "/uuid:nothing", headers=coord)
    assert unknown.status_code == 404 and unknown.json["code"] == 404.1


def test_edit_with_deprecated_id_makes_a_new_version(client, setup, coord):
    instance_id, _ = create(client, setup, coord, photo=None, audit=None)
    url = f"{setup['base']}/submissions/{instance_id}"
    no_deprecation = client.put(
        url, data=record(new_instance_id(), photo=None, audit=None), headers={**coord, **XML}
    )
    assert no_deprecation.status_code == 400 and no_deprecation.json["code"] == 400.19
    nameless = record("uuid:gone", deprecated_id=instance_id, photo=None, audit=None).replace(
        b"<instanceID>uuid:gone</instanceID>", b""
    )
    no_instance_id = client.put(url, data=nameless, headers={**coord, **XML})
    assert no_instance_id.status_code == 400 and no_instance_id.json["code"] == 400.2
    new_id = new_instance_id()
    edited = client.put(
        url,
        data=record(new_id, age="35", deprecated_id=instance_id, photo=None, audit=None),
        headers={**coord, **XML},
    )
    assert edited.status_code == 200, edited.json
    assert edited.json["instanceId"] == instance_id
    assert edited.json["reviewState"] == "edited"
    assert edited.json["updatedAt"] is not None
    stale = client.put(
        url,
        data=record(new_instance_id(), deprecated_id=instance_id, photo=None, audit=None),
        headers={**coord, **XML},
    )
    assert stale.status_code == 400 and stale.json["code"] == 400.19
    assert stale.json["details"]["currentInstanceId"] == new_id
    reused = client.put(
        url,
        data=record(new_id, deprecated_id=new_id, photo=None, audit=None),
        headers={**coord, **XML},
    )
    assert reused.status_code == 409 and reused.json["code"] == 409.8
    versions = client.get(url + "/versions", headers=coord).json
    assert [v["instanceId"] for v in versions] == [new_id, instance_id]
    assert [v["current"] for v in versions] == [True, False]
    assert versions[0]["deprecatedId"] == instance_id
    assert client.get(f"{url}/versions/{instance_id}.xml", headers=coord).data == record(
        instance_id, photo=None, audit=None
    )
    one = client.get(f"{url}/versions/{new_id}", headers=coord).json
    assert one["formVersion"] == "2024050701" and one["current"] is True
    # The record is also found by the instanceID of its later version, as in Central.
    assert client.get(f"{setup['base']}/submissions/{new_id}", headers=coord).json[
        "instanceId"
    ] == (instance_id)
    assert b"<age>35</age>" in client.get(url + ".xml", headers=coord).data


def test_review_and_comments(client, setup, coord):
    instance_id, _ = create(client, setup, coord, photo=None, audit=None)
    url = f"{setup['base']}/submissions/{instance_id}"
    bad = client.patch(url, json={"reviewState": "good"}, headers=coord)
    assert bad.status_code == 400 and bad.json["code"] == 400.8
    assert bad.json["details"]["field"] == "reviewState"
    missing = client.patch(url, json={}, headers=coord)
    assert missing.status_code == 400 and missing.json["code"] == 400.2
    not_json = client.patch(url, data=b"reviewState=approved", headers=coord)
    assert not_json.status_code == 400 and not_json.json["code"] == 400.1
    approved = client.patch(url, json={"reviewState": "approved"}, headers=coord)
    assert approved.status_code == 200 and approved.json["reviewState"] == "approved"
    comment = client.post(url + "/comments", json={"body": "Vérifier l'âge"}, headers=coord)
    assert comment.status_code == 200
    assert set(comment.json) == {"body", "actorId", "createdAt"}
    empty = client.post(url + "/comments", json={"body": "  "}, headers=coord)
    assert empty.status_code == 400 and empty.json["code"] == 400.2
    listed = client.get(url + "/comments", headers={**coord, "X-Extended-Metadata": "true"})
    assert [c["body"] for c in listed.json] == ["Vérifier l'âge"]
    assert listed.json[0]["actor"]["displayName"]


def test_attachments_list_upload_download_and_clear(client, setup, coord):
    instance_id, _ = create(client, setup, coord, audit=None)
    url = f"{setup['base']}/submissions/{instance_id}/attachments"
    assert client.get(url, headers=coord).json == [{"name": "1715090512345.jpg", "exists": False}]
    photo = jpeg(3)
    uploaded = client.post(
        url + "/1715090512345.jpg",
        data=photo,
        headers={**coord, "Content-Type": "image/jpeg"},
    )
    assert uploaded.status_code == 200 and uploaded.json == {"success": True}
    assert client.get(url, headers=coord).json == [{"name": "1715090512345.jpg", "exists": True}]
    download = client.get(url + "/1715090512345.jpg", headers=coord)
    assert download.status_code == 200 and download.data == photo
    assert download.content_type == "image/jpeg"
    unexpected = client.post(url + "/other.jpg", data=photo, headers=coord)
    assert unexpected.status_code == 404
    extended = client.get(
        f"{setup['base']}/submissions/{instance_id}",
        headers={**coord, "X-Extended-Metadata": "true"},
    ).json
    assert extended["attachmentsPresent"] == 1 and extended["attachmentsExpected"] == 1
    assert extended["currentVersion"]["instanceId"] == instance_id
    assert extended["submitter"]["displayName"] == "coord@example.org"
    cleared = client.delete(url + "/1715090512345.jpg", headers=coord)
    assert cleared.json == {"success": True}
    assert client.get(url, headers=coord).json == [{"name": "1715090512345.jpg", "exists": False}]
    assert client.get(url + "/1715090512345.jpg", headers=coord).status_code == 404


def test_delete_and_restore(client, setup, coord):
    instance_id, _ = create(client, setup, coord, photo=None, audit=None)
    url = f"{setup['base']}/submissions/{instance_id}"
    assert client.delete(url, headers=coord).json == {"success": True}
    assert client.get(url, headers=coord).status_code == 404
    trash = client.get(setup["base"] + "/submissions?deleted=True", headers=coord).json
    assert [s["instanceId"] for s in trash] == [instance_id]
    assert trash[0]["deletedAt"] is not None
    again = client.post(
        setup["base"] + "/submissions",
        data=record(instance_id, photo=None, audit=None),
        headers={**coord, **XML},
    )
    assert again.status_code == 409
    restored = client.post(url + "/restore", headers=coord)
    assert restored.status_code == 200 and restored.json["deletedAt"] is None
    assert client.get(url, headers=coord).status_code == 200


def test_list_pages_newest_first_with_limit_and_offset(client, setup, coord):
    ids = [create(client, setup, coord, photo=None, audit=None)[0] for _ in range(5)]
    url = setup["base"] + "/submissions"
    everything = client.get(url, headers=coord)
    assert [s["instanceId"] for s in everything.json] == ids[::-1]
    page = client.get(url + "?limit=2&offset=1", headers=coord).json
    assert [s["instanceId"] for s in page] == [ids[3], ids[2]]
    bad = client.get(url + "?limit=many", headers=coord)
    assert bad.status_code == 400 and bad.json["details"]["field"] == "limit"


def test_cursor_pages_oldest_first_and_resume_with_what_arrived(client, setup, coord):
    ids = [create(client, setup, coord, photo=None, audit=None)[0] for _ in range(5)]
    url = setup["base"] + "/submissions"
    first = client.get(url + "?cursor=&limit=2", headers=coord)
    assert [s["instanceId"] for s in first.json] == ids[:2]
    assert first.headers["X-More"] == "true"
    token = first.headers["X-Next-Cursor"]
    assert f"cursor={token}" in first.headers["Link"] and 'rel="next"' in first.headers["Link"]
    second = client.get(f"{url}?cursor={token}&limit=2", headers=coord)
    assert [s["instanceId"] for s in second.json] == ids[2:4]
    third = client.get(f"{url}?cursor={second.headers['X-Next-Cursor']}&limit=2", headers=coord)
    assert [s["instanceId"] for s in third.json] == ids[4:]
    assert third.headers["X-More"] == "false"
    done = third.headers["X-Next-Cursor"]
    empty = client.get(f"{url}?cursor={done}", headers=coord)
    assert empty.json == [] and empty.headers["X-Next-Cursor"] == done
    late = create(client, setup, coord, photo=None, audit=None)[0]
    assert [s["instanceId"] for s in client.get(f"{url}?cursor={done}", headers=coord).json] == [
        late
    ]
    for bad in ("garbage", "eyJvIjoiLXNlcSIsInMiOjF9"):  # the second is a newest-first cursor
        refused = client.get(f"{url}?cursor={bad}", headers=coord)
        assert refused.status_code == 400 and refused.json["code"] == 400.35
    mixed = client.get(f"{url}?cursor=&offset=2", headers=coord)
    assert mixed.status_code == 400 and mixed.json["details"]["field"] == "offset"


def test_audit_logs(client, setup, coord):
    instance_id, _ = create(client, setup, coord, photo=None, audit=None)
    client.patch(
        f"{setup['base']}/submissions/{instance_id}",
        json={"reviewState": "rejected"},
        headers=coord,
    )
    own = client.get(f"{setup['base']}/submissions/{instance_id}/audits", headers=coord).json
    assert [a["action"] for a in own] == ["submission.create", "submission.update"]
    assert set(own[0]) >= {"actorId", "action", "acteeId", "details", "loggedAt"}
    assert own[1]["details"]["reviewState"] == "rejected"
    assert client.get("/v1/audits").status_code == 401
    assert client.get("/v1/audits", headers=coord).status_code == 403
    admin = login(client, "admin@example.org")
    everything = client.get("/v1/audits?action=submission", headers=admin).json
    assert [a["action"] for a in everything] == ["submission.update", "submission.create"]
    assert client.get("/v1/audits?action=submission&limit=1&offset=1", headers=admin).json[0][
        "action"
    ] == ("submission.create")
    assert client.get("/v1/audits?end=2000-01-01", headers=admin).json == []
    bad = client.get("/v1/audits?start=yesterday", headers=admin)
    assert bad.status_code == 400 and bad.json["details"]["field"] == "start"


def test_draft_records_have_their_own_routes(app, client, setup, coord):
    with app.app_context(), db.database().session() as db_session:
        publish_form(db_session, setup["project"], form_id="essai", draft=True)
    base = f"/v1/projects/{setup['project']}/forms/essai"
    instance_id = new_instance_id()
    created = client.post(
        base + "/draft/submissions",
        data=record(instance_id, form_id="essai", photo=None, audit=None),
        headers={**coord, **XML},
    )
    assert created.status_code == 200, created.json
    listed = client.get(base + "/draft/submissions", headers=coord).json
    assert [s["instanceId"] for s in listed] == [instance_id]
    assert client.get(f"{base}/draft/submissions/{instance_id}", headers=coord).status_code == 200
    assert client.get(f"{base}/submissions/{instance_id}", headers=coord).status_code == 404
    published_only = client.get(f"{setup['base']}/draft/submissions", headers=coord)
    assert published_only.status_code == 404


def test_a_file_uploaded_through_the_api_replaces_the_one_the_record_held(client, setup, coord):
    """The API replaces (intake would keep the first copy): server/submissions/attachments.fill."""
    instance_id, _ = create(client, setup, coord, audit=None)
    url = f"{setup['base']}/submissions/{instance_id}/attachments/1715090512345.jpg"
    first, second = jpeg(4), jpeg(5)
    assert client.post(url, data=first, headers={**coord, "Content-Type": "image/jpeg"}).json
    replaced = client.post(
        url, data=second, headers={**coord, "Content-Type": "application/octet-stream"}
    )
    assert replaced.status_code == 200 and replaced.json == {"success": True}
    download = client.get(url, headers=coord)
    assert download.data == second
    assert download.content_type == "image/jpeg"  # a type that says nothing keeps the slot's
    extended = client.get(
        f"{setup['base']}/submissions/{instance_id}",
        headers={**coord, "X-Extended-Metadata": "true"},
    ).json
    assert extended["attachmentsPresent"] == 1
