"""Entity lists and entities over the REST API and OData, in ODK Central's shapes.

Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import uuid as uuidlib
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from server import db
from server.audit.models import AuditEvent
from server.entities.models import Entity, EntityVersion
from tests.support import factories

ENTITY_KEYS = {
    "uuid",
    "creatorId",
    "createdAt",
    "updatedAt",
    "deletedAt",
    "conflict",
    "currentVersion",
}
VERSION_KEYS = {
    "label",
    "current",
    "createdAt",
    "creatorId",
    "userAgent",
    "version",
    "baseVersion",
    "data",
    "dataReceived",
    "conflictingProperties",
    "source",
}


def login(client, email: str) -> dict[str, str]:
    token = client.post("/v1/sessions", json={"email": email, "password": factories.PASSWORD}).json[
        "token"
    ]
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def lists(client, db_session):
    project = factories.project(db_session)
    factories.user(db_session, "coord@example.org", role="manager", project_id=project.id)
    factories.user(db_session, "analyste@example.org", role="viewer", project_id=project.id)
    headers = login(client, "coord@example.org")
    base = f"/v1/projects/{project.id}/datasets"
    created = client.post(
        base, json={"name": "villages", "approvalRequired": False}, headers=headers
    )
    assert created.status_code == 200, created.json
    for name in ("region", "population"):
        added = client.post(f"{base}/villages/properties", json={"name": name}, headers=headers)
        assert added.json == {"success": True}
    return {"base": base, "headers": headers, "project": project.id}


def test_entity_lists_in_centrals_shape(client, lists):
    base, headers = lists["base"], lists["headers"]
    listed = client.get(base, headers=headers).json
    assert [d["name"] for d in listed] == ["villages"]
    assert set(listed[0]) == {"name", "projectId", "createdAt", "approvalRequired", "ownerOnly"}
    extended = client.get(base, headers={**headers, "X-Extended-Metadata": "true"}).json[0]
    assert extended["entities"] == 0 and extended["lastEntity"] is None
    one = client.get(base + "/villages", headers=headers).json
    assert [p["name"] for p in one["properties"]] == ["region", "population"]
    assert set(one["properties"][0]) == {"name", "odataName", "publishedAt", "forms"}
    assert one["properties"][0]["publishedAt"].endswith("Z")
    changed = client.patch(base + "/villages", json={"approvalRequired": True}, headers=headers)
    assert changed.json["approvalRequired"] is True
    assert client.get(base + "/nothing", headers=headers).status_code == 404


def test_entity_list_and_property_errors(client, lists):
    base, headers = lists["base"], lists["headers"]
    for body, status, code in (
        ({"name": "villages"}, 409, 409.3),
        ({"name": "Villages"}, 409, 409.16),
        ({"name": "__hidden"}, 400, 400.8),
        ({"name": "two words"}, 400, 400.8),
        ({}, 400, 400.2),
        ({"name": "ok", "approvalRequired": "yes"}, 400, 400.8),
    ):
        answer = client.post(base, json=body, headers=headers)
        assert (answer.status_code, answer.json["code"]) == (status, code), body
    not_json = client.post(base, data=b"name=x", headers=headers)
    assert not_json.status_code == 400 and not_json.json["code"] == 400.1
    prop = base + "/villages/properties"
    for body, status, code in (
        ({"name": "region"}, 409, 409.3),
        ({"name": "Region"}, 409, 409.17),
        ({"name": "label"}, 400, 400.8),
        ({"name": 3}, 400, 400.8),
        ({}, 400, 400.2),
    ):
        answer = client.post(prop, json=body, headers=headers)
        assert (answer.status_code, answer.json["code"]) == (status, code), body
    viewer = login(client, "analyste@example.org")
    assert client.get(base, headers=viewer).status_code == 200
    refused = client.post(base, json={"name": "autre"}, headers=viewer)
    assert refused.status_code == 403 and refused.json["code"] == 403.1
    assert client.get(base).status_code == 401


def test_create_read_update_delete_an_entity(client, lists, app):
    url = lists["base"] + "/villages/entities"
    headers = {**lists["headers"], "User-Agent": "pyodk v1.3.0"}
    uuid = str(uuidlib.uuid4())
    created = client.post(
        url, json={"uuid": uuid, "label": "Ségou", "data": {"region": "ML04"}}, headers=headers
    )
    assert created.status_code == 200, created.json
    body = created.json
    assert set(body) == ENTITY_KEYS and set(body["currentVersion"]) == VERSION_KEYS
    assert body["uuid"] == uuid and body["conflict"] is None
    current = body["currentVersion"]
    assert current["version"] == 1 and current["current"] is True
    assert current["label"] == "Ségou" and current["data"] == {"region": "ML04"}
    assert current["userAgent"] == "pyodk v1.3.0" and current["creatorId"] == body["creatorId"]
    missing_version = client.patch(f"{url}/{uuid}", json={"label": "x"}, headers=headers)
    assert missing_version.status_code == 400 and missing_version.json["code"] == 400.2
    updated = client.patch(
        f"{url}/{uuid}?baseVersion=1", json={"data": {"population": "130000"}}, headers=headers
    )
    assert updated.status_code == 200, updated.json
    version = updated.json["currentVersion"]
    assert version["version"] == 2 and version["baseVersion"] == 1
    assert version["data"] == {"region": "ML04", "population": "130000"}
    assert version["label"] == "Ségou" and updated.json["updatedAt"] is not None
    stale = client.patch(f"{url}/{uuid}?baseVersion=1", json={"label": "Segou"}, headers=headers)
    assert stale.status_code == 409 and stale.json["code"] == 409.15
    forced = client.patch(f"{url}/{uuid}?force=True", json={"label": "Segou"}, headers=headers)
    assert forced.json["currentVersion"]["version"] == 3
    versions = client.get(f"{url}/{uuid}/versions", headers=headers).json
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert [v["current"] for v in versions] == [False, False, True]
    got = client.get(f"{url}/{uuid}", headers={**headers, "X-Extended-Metadata": "true"}).json
    assert got["currentVersion"]["label"] == "Segou" and got["creator"]["displayName"]
    assert client.delete(f"{url}/{uuid}", headers=headers).json == {"success": True}
    assert client.get(f"{url}/{uuid}", headers=headers).status_code == 404
    assert client.get(url, headers=headers).json == []
    assert [e["uuid"] for e in client.get(url + "?deleted=true", headers=headers).json] == [uuid]
    again = client.post(url, json={"uuid": uuid, "label": "Ségou"}, headers=headers)
    assert again.status_code == 409 and again.json["code"] == 409.19
    with app.app_context(), db.database().session(readonly=True) as db_session:
        actions = db_session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.action.like("entity.%"))
        ).all()
    assert sorted(actions) == sorted(
        ["entity.create", "entity.update.version", "entity.update.version", "entity.delete"]
    )


def test_bad_entities_are_refused_whole(client, lists, app):
    url = lists["base"] + "/villages/entities"
    headers = lists["headers"]
    for body, code in (
        ({"label": "A", "data": {"unknown": "x"}}, 400.28),
        ({"label": "A", "data": {"region": 4}}, 400.28),
        ({"label": "", "data": {}}, 400.28),
        ({"data": {}}, 400.2),
        ({"label": "A", "data": ["x"]}, 400.8),
        ({"uuid": "not-a-uuid", "label": "A"}, 400.8),
    ):
        answer = client.post(url, json=body, headers=headers)
        assert answer.status_code == 400 and answer.json["code"] == code, body
    bulk = client.post(
        url,
        json={
            "entities": [
                {"label": "A", "data": {"region": "1"}},
                {"label": "B", "data": {"x": "2"}},
            ],
            "source": {"name": "villages.csv"},
        },
        headers=headers,
    )
    assert bulk.status_code == 400 and bulk.json["code"] == 400.28
    assert "2" in bulk.json["message"]  # names the entity at fault
    no_source = client.post(url, json={"entities": [{"label": "A"}]}, headers=headers)
    assert no_source.status_code == 400 and no_source.json["details"]["field"] == "source"
    with app.app_context(), db.database().session(readonly=True) as db_session:
        assert db_session.execute(sa.select(sa.func.count()).select_from(Entity)).scalar() == 0
    duplicate = str(uuidlib.uuid4())
    assert (
        client.post(url, json={"uuid": duplicate, "label": "A"}, headers=headers).status_code == 200
    )
    taken = client.post(url, json={"uuid": duplicate.upper(), "label": "B"}, headers=headers)
    assert taken.status_code == 409 and taken.json["code"] == 409.3


def test_bulk_create_and_the_odata_table(client, lists, app):
    url = lists["base"] + "/villages/entities"
    headers = lists["headers"]
    created = client.post(
        url,
        json={
            "entities": [
                {"label": f"Village {n}", "data": {"region": "ML04", "population": str(n)}}
                for n in range(5)
            ],
            "source": {"name": "villages.csv", "size": 5},
        },
        headers=headers,
    )
    assert created.json == {"success": True}
    with app.app_context(), db.database().session(readonly=True) as db_session:
        sources = db_session.scalars(sa.select(EntityVersion.source)).all()
    assert sources == [{"name": "villages.csv", "size": 5}] * 5
    svc = f"{lists['base']}/villages.svc"
    service = client.get(svc, headers=headers).json
    assert service["value"] == [{"name": "Entities", "kind": "EntitySet", "url": "Entities"}]
    metadata = client.get(svc + "/$metadata", headers=headers)
    assert b'<Property Name="population" Type="Edm.String"/>' in metadata.data
    first = client.get(svc + "/Entities?$top=2&$count=true", headers=headers).json
    assert first["@odata.count"] == 5
    assert [r["label"] for r in first["value"]] == ["Village 4", "Village 3"]  # newest first
    row = first["value"][0]
    assert set(row) == {"__id", "label", "__system", "region", "population"}
    assert row["__system"]["version"] == 1 and row["__system"]["updates"] == 0
    assert row["population"] == "4"
    labels = [r["label"] for r in first["value"]]
    following = first["@odata.nextLink"]
    while following:
        page = client.get(following.split("localhost", 1)[1], headers=headers).json
        labels += [r["label"] for r in page["value"]]
        following = page.get("@odata.nextLink")
    assert labels == [f"Village {n}" for n in (4, 3, 2, 1, 0)]
    selected = client.get(svc + "/Entities?$select=__id,label", headers=headers).json["value"]
    assert set(selected[0]) == {"__id", "label"}
    assert client.get(svc + "/Entities?$select=nope", headers=headers).json["code"] == 400.23
    unsupported = client.get(svc + "/Entities?$filter=label eq 'x'", headers=headers)
    assert unsupported.status_code == 501 and unsupported.json["code"] == 501.5
    assert client.get(svc + "/Entities?$skiptoken=zz", headers=headers).json["code"] == 400.35


# ---- $filter on the OData table ----------------------------------------------------------------


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.fixture
def dated(client, db_session, lists):
    """Four entities A-D with known times: B updated, C and D by a second user, D deleted."""
    factories.user(db_session, "second@example.org", role="manager", project_id=lists["project"])
    url = lists["base"] + "/villages/entities"
    authors = {"coord": lists["headers"], "second": login(client, "second@example.org")}
    plan = {
        "A": ("coord", "2023-12-31T23:30:00+00:00"),
        "B": ("coord", "2024-01-15T08:00:00+00:00"),
        "C": ("second", "2024-02-01T00:00:00+00:00"),
        "D": ("second", "2024-06-10T17:45:00+00:00"),
    }
    uuids, creators = {}, {}
    for label, (author, _created) in plan.items():
        body = {"label": label, "data": {"region": "ML04" if label in "AB" else "ML05"}}
        answer = client.post(url, json=body, headers=authors[author])
        assert answer.status_code == 200, answer.json
        uuids[label], creators[author] = answer.json["uuid"], answer.json["creatorId"]
    for label, (_, created) in plan.items():
        db_session.execute(
            sa.update(Entity).where(Entity.uuid == uuids[label]).values(created_at=at(created))
        )
    db_session.commit()
    patched = client.patch(
        f"{url}/{uuids['B']}?baseVersion=1", json={"label": "B2"}, headers=authors["coord"]
    )
    assert patched.status_code == 200, patched.json
    db_session.execute(
        sa.update(Entity)
        .where(Entity.uuid == uuids["B"])
        .values(updated_at=at("2024-03-01T12:00:00+00:00"))
    )
    db_session.commit()
    assert client.delete(f"{url}/{uuids['D']}", headers=authors["coord"]).status_code == 200
    label_of = {u: label for label, u in uuids.items()}
    return {
        "table": f"{lists['base']}/villages.svc/Entities",
        "headers": lists["headers"],
        "uuids": uuids,
        "label_of": label_of,
        "creators": creators,
    }


def filtered(client, dated, text: str, **params):
    answer = client.get(
        dated["table"], query_string={"$filter": text, **params}, headers=dated["headers"]
    )
    assert answer.status_code == 200, (text, answer.json)
    return answer.json


def labels(client, dated, text: str, **params) -> list[str]:
    """The entities a filter keeps, by their original label, in the table's order."""
    rows = filtered(client, dated, text, **params)["value"]
    return [dated["label_of"][r["__id"]] for r in rows]


def test_filter_on_id_creator_and_conflict(client, dated):
    uuids, creators = dated["uuids"], dated["creators"]
    assert labels(client, dated, f"__id eq '{uuids['B']}'") == ["B"]
    assert labels(client, dated, f"__id ne '{uuids['B']}'") == ["C", "A"]  # D is deleted
    assert labels(client, dated, f"__system/creatorId eq {creators['second']}") == ["C"]
    # Central's PostgreSQL reads '5' as 5 against the integer column; so do we.
    assert labels(client, dated, f"__system/creatorId eq '{creators['coord']}'") == ["B", "A"]
    assert labels(client, dated, f"__system/creatorId ne {creators['coord']}") == ["C"]
    # No conflict is kept here: conflict is null for every entity, as the rows show.
    assert labels(client, dated, "__system/conflict eq null") == ["C", "B", "A"]
    assert labels(client, dated, "__system/conflict eq 'soft'") == []
    assert labels(client, dated, "__system/conflict ne null") == []


def test_filter_on_created_and_updated_times(client, dated):
    assert labels(client, dated, "__system/createdAt lt 2024-01-01") == ["A"]
    assert labels(client, dated, "__system/createdAt le 2024-02-01T00:00:00Z") == ["C", "B", "A"]
    assert labels(client, dated, "__system/createdAt gt 2024-02-01T00:00:00.000Z") == []
    assert labels(client, dated, "__system/createdAt ge 2024-02-01") == ["C"]
    assert labels(client, dated, "__system/createdAt eq 2024-01-15T08:00:00Z") == ["B"]
    # An offset is read as such: 00:30 at +01:00 is A's 23:30 UTC, so A is not after it.
    assert labels(client, dated, "__system/createdAt gt 2024-01-01T00:30:00+01:00") == ["C", "B"]
    assert labels(client, dated, "__system/createdAt lt now()") == ["C", "B", "A"]
    assert labels(client, dated, "__system/updatedAt ne null") == ["B"]
    assert labels(client, dated, "__system/updatedAt eq null") == ["C", "A"]
    assert labels(client, dated, "__system/updatedAt gt 2024-02-29") == ["B"]
    row = filtered(client, dated, "__system/updatedAt ne null")["value"][0]
    assert row["label"] == "B2" and row["__system"]["updatedAt"] == "2024-03-01T12:00:00.000Z"


def test_filter_on_deleted_at_includes_deleted_entities(client, dated):
    assert labels(client, dated, "__system/deletedAt ne null") == ["D"]
    assert labels(client, dated, "__system/deletedAt eq null") == ["C", "B", "A"]
    either = f"__system/deletedAt ne null or __id eq '{dated['uuids']['A']}'"
    assert labels(client, dated, either) == ["D", "A"]
    assert (
        filtered(client, dated, "__system/deletedAt ne null", **{"$count": "true"})["@odata.count"]
        == 1
    )
    # Without deletedAt in the filter, deleted entities stay out, as in Central.
    assert labels(client, dated, "__system/createdAt gt 2024-06-01") == []


def test_filter_date_functions_use_utc(client, dated):
    assert labels(client, dated, "year(__system/createdAt) eq 2024") == ["C", "B"]
    assert labels(client, dated, "month(__system/createdAt) eq 1") == ["B"]
    assert labels(client, dated, "day(__system/createdAt) eq 31") == ["A"]
    assert labels(client, dated, "hour(__system/createdAt) eq 23") == ["A"]
    assert labels(client, dated, "minute(__system/createdAt) eq 30") == ["A"]
    assert labels(client, dated, "second(__system/createdAt) eq 0") == ["C", "B", "A"]
    assert labels(client, dated, "month(__system/updatedAt) eq 3") == ["B"]
    # A literal on the left is turned around.
    assert labels(client, dated, "2023 lt year(__system/createdAt)") == ["C", "B"]


def test_filter_and_or_not_and_parentheses(client, dated):
    uuids, coord = dated["uuids"], dated["creators"]["coord"]
    a_or_c = f"__id eq '{uuids['A']}' or __id eq '{uuids['C']}'"
    assert labels(client, dated, a_or_c) == ["C", "A"]
    assert labels(client, dated, f"not ({a_or_c})") == ["B"]
    both = f"__system/creatorId eq {coord} and __system/createdAt ge 2024-01-01"
    assert labels(client, dated, both) == ["B"]
    # and binds tighter than or; parentheses change that.
    assert labels(client, dated, f"__system/creatorId eq {coord} and {a_or_c}") == ["C", "A"]
    assert labels(client, dated, f"__system/creatorId eq {coord} and ({a_or_c})") == ["A"]
    assert labels(client, dated, "not __system/updatedAt eq null") == ["B"]


def test_filter_with_top_skip_count_and_the_next_link(client, dated):
    text = "year(__system/createdAt) eq 2024"
    first = filtered(client, dated, text, **{"$top": "1", "$count": "true"})
    assert first["@odata.count"] == 2  # the filtered count, whatever the page
    assert [dated["label_of"][r["__id"]] for r in first["value"]] == ["C"]
    link = urlsplit(first["@odata.nextLink"])
    assert "%24filter=year" in link.query  # the next page keeps the filter
    following = client.get(f"{link.path}?{link.query}", headers=dated["headers"]).json
    assert [dated["label_of"][r["__id"]] for r in following["value"]] == ["B"]
    assert "@odata.nextLink" not in following
    assert labels(client, dated, text, **{"$skip": "1"}) == ["B"]
    assert filtered(client, dated, text, **{"$count": "true", "$skip": "5"}) == {
        "@odata.context": first["@odata.context"],
        "value": [],
        "@odata.count": 2,
    }
    selected = filtered(client, dated, text, **{"$select": "__id,label"})["value"]
    assert [set(r) for r in selected] == [{"__id", "label"}] * 2
    unfiltered = client.get(
        dated["table"], query_string={"$count": "true"}, headers=dated["headers"]
    ).json
    assert unfiltered["@odata.count"] == 3


@pytest.mark.parametrize(
    ("text", "code"),
    [
        # Central filters entities on system fields only: not the label, not the properties.
        ("label eq 'A'", 501.5),
        ("region eq 'ML04'", 501.5),
        ("nosuch eq 1", 501.5),
        ("__system/submissionDate gt 2024-01-01", 501.5),  # a submissions field
        ("year(label) eq 2024", 501.5),
        # OData Central does not implement either.
        ("contains(label, 'A')", 501.4),
        ("startswith(__id, 'a')", 501.4),
        ("__system/creatorId add 1 eq 2", 501.4),
        # Text that cannot be used.
        ("__id eq", 400.18),
        ("(__id eq 'a'", 400.18),
        ("__id neq 'a'", 400.18),
        ("__system/createdAt gt 'soon'", 400.18),
        ("__system/creatorId eq 'me'", 400.18),
        ("__id eq 5", 400.18),
        ("year(__id) eq 2024", 400.18),
        ("__system/conflict gt null", 400.18),
        ("__id eq 'a'; DROP TABLE entities", 400.18),
    ],
)
def test_unsupported_filters_get_centrals_codes(client, lists, text, code):
    answer = client.get(
        f"{lists['base']}/villages.svc/Entities",
        query_string={"$filter": text},
        headers=lists["headers"],
    )
    assert answer.status_code == int(code) and answer.json["code"] == code, answer.json
    if code == 501.5:  # names the fields one can filter on
        assert "__system/createdAt" in answer.json["message"]
