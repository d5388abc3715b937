"""The OData feed of a form, in ODK Central's shapes, on SQLite and PostgreSQL.

The form has a group, a field whose name is not an OData identifier (``first-name``),
numbers, a date, a geopoint, a geotrace, a select_multiple, and a repeat holding a group and a
nested repeat: every shape a table of the feed can take.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from lxml import etree

from server.api import odata as odata_routes
from tests.fixtures.forms import workbooks
from tests.support import factories
from tests.support.openrosa import new_instance_id

XML = {"Content-Type": "application/xml"}
SYSTEM_KEYS = {
    "submissionDate",
    "updatedAt",
    "submitterId",
    "submitterName",
    "attachmentsPresent",
    "attachmentsExpected",
    "status",
    "reviewState",
    "deviceId",
    "edits",
    "formVersion",
    "deletedAt",
}
EDM = {"edm": "http://docs.oasis-open.org/odata/ns/edm"}


def record_xml(instance_id: str, name: str = "Awa", *, households: int = 2) -> bytes:
    homes = ""
    for number in range(households):
        members = "".join(
            f"<member><member_name>{name}-{number}-{m}</member_name></member>"
            for m in range(number + 2)
        )
        street = f"<street>Rue {number}</street>" if number == 0 else "<street/>"
        homes += f"<household><head>Chef {number}</head><address>{street}</address>{members}"
        homes += "</household>"
    return (
        f'<data id="odata_test" version="1"><person><first-name>{name}</first-name>'
        "<age>034</age></person><weight>61.5</weight><visit_date>2024-05-07</visit_date>"
        "<location>12.65 -8.0 350 5</location><route>12.6 -8.0 0 0;12.7 -8.1 0 0</route>"
        f"<needs>water  food</needs>{homes}<meta><instanceID>{instance_id}</instanceID>"
        f"<instanceName>{name}</instanceName></meta></data>"
    ).encode()


@pytest.fixture
def feed(client, db_session):
    project = factories.project(db_session)
    factories.user(db_session, "coord@example.org", role="manager", project_id=project.id)
    factories.user(db_session, "enqueteur@example.org", role="formfill", project_id=project.id)
    token = client.post(
        "/v1/sessions", json={"email": "coord@example.org", "password": factories.PASSWORD}
    ).json["token"]
    headers = {"Authorization": f"Bearer {token}"}
    uploaded = client.post(
        f"/v1/projects/{project.id}/forms?publish=true",
        data=workbooks.xlsx(workbooks.text("odata.md")),
        headers={**headers, "Content-Type": workbooks.XLSX_TYPE},
    )
    assert uploaded.status_code == 200, uploaded.json
    base = f"/v1/projects/{project.id}/forms/odata_test"

    def add(name: str = "Awa", **options) -> str:
        instance_id = new_instance_id()
        answer = client.post(
            base + "/submissions",
            data=record_xml(instance_id, name, **options),
            headers={**headers, **XML},
        )
        assert answer.status_code == 200, answer.json
        return instance_id

    return {"base": base, "headers": headers, "add": add, "project": project.id}


def get(client, feed, path: str, status: int = 200):
    answer = client.get(feed["base"] + path, headers=feed["headers"])
    assert answer.status_code == status, answer.data
    return answer


def test_service_document_and_metadata(client, feed):
    service = get(client, feed, ".svc").json
    assert service["@odata.context"].endswith(f"{feed['base']}.svc/$metadata")
    assert [t["name"] for t in service["value"]] == [
        "Submissions",
        "Submissions.household",
        "Submissions.household.member",
    ]
    assert all(t["kind"] == "EntitySet" and t["url"] == t["name"] for t in service["value"])
    metadata = get(client, feed, ".svc/$metadata")
    assert metadata.content_type.startswith("application/xml")
    root = etree.fromstring(metadata.data)
    types = {
        e.get("Name"): {p.get("Name"): p.get("Type") for p in e}
        for e in root.iterfind(".//edm:EntityType", EDM)
    }
    base = "org.opendatakit.user.odata_test"
    submissions = types["Submissions"]
    assert submissions["__id"] == "Edm.String"
    assert submissions["__system"] == "org.opendatakit.submission.metadata"
    assert submissions["person"] == f"{base}.person"
    assert submissions["weight"] == "Edm.Decimal"
    assert submissions["visit_date"] == "Edm.Date"
    assert submissions["location"] == "Edm.GeographyPoint"
    assert submissions["route"] == "Edm.GeographyLineString"
    assert submissions["household"] == f"Collection({base}.Submissions.household)"
    assert types["Submissions.household"]["__Submissions-id"] == "Edm.String"
    assert types["Submissions.household"]["address"] == f"{base}.household.address"
    assert types["Submissions.household.member"]["__Submissions-household-id"] == "Edm.String"
    complex_types = {
        e.get("Name"): {p.get("Name"): p.get("Type") for p in e}
        for e in root.iterfind(".//edm:ComplexType", EDM)
    }
    assert complex_types["person"] == {"first_name": "Edm.String", "age": "Edm.Int64"}
    sets = [e.get("Name") for e in root.iterfind(".//edm:EntitySet", EDM)]
    assert sets == ["Submissions", "Submissions.household", "Submissions.household.member"]


def test_submissions_rows_are_typed_with_central_system_fields(client, feed):
    instance_id = feed["add"]()
    body = get(client, feed, ".svc/Submissions").json
    assert body["@odata.context"].endswith(".svc/$metadata#Submissions")
    assert "@odata.nextLink" not in body and "@odata.count" not in body
    [row] = body["value"]
    assert row["__id"] == instance_id
    assert set(row["__system"]) == SYSTEM_KEYS
    system = row["__system"]
    assert system["submitterName"] == "coord@example.org"
    assert isinstance(system["submitterId"], str) and system["edits"] == 0
    assert system["formVersion"] == "1" and system["reviewState"] is None
    assert row["person"] == {"first_name": "Awa", "age": 34}
    assert row["weight"] == 61.5 and row["visit_date"] == "2024-05-07"
    assert row["location"] == {
        "type": "Point",
        "coordinates": [-8.0, 12.65, 350.0],
        "properties": {"accuracy": 5.0},
    }
    assert row["route"]["type"] == "LineString"
    assert row["route"]["coordinates"] == [[-8.0, 12.6, 0.0], [-8.1, 12.7, 0.0]]
    assert row["needs"] == "water food"
    assert row["household@odata.navigationLink"] == f"Submissions('{instance_id}')/household"
    assert "household" not in row
    assert row["meta"] == {"instanceID": instance_id, "instanceName": "Awa"}


def test_wkt_and_expand(client, feed):
    feed["add"]()
    wkt = get(client, feed, ".svc/Submissions?$wkt=True").json["value"][0]
    assert wkt["location"] == "POINT (-8 12.65 350)"
    assert wkt["route"] == "LINESTRING (-8 12.6 0,-8.1 12.7 0)"
    expanded = get(client, feed, ".svc/Submissions?$expand=*").json["value"][0]
    assert [h["head"] for h in expanded["household"]] == ["Chef 0", "Chef 1"]
    assert [m["member_name"] for m in expanded["household"][1]["member"]] == [
        "Awa-1-0",
        "Awa-1-1",
        "Awa-1-2",
    ]
    assert expanded["household"][0]["address"] == {"street": "Rue 0"}
    assert expanded["household"][1]["address"] == {"street": None}
    unsupported = get(client, feed, ".svc/Submissions?$expand=household", 501)
    assert unsupported.json["code"] == 501.6
    both = get(client, feed, ".svc/Submissions?$expand=*&$select=__id", 501)
    assert both.json["code"] == 501.11


def test_repeat_tables_join_to_their_parents(client, feed):
    instance_id = feed["add"]()
    households = get(client, feed, ".svc/Submissions.household").json
    assert households["@odata.context"].endswith("#Submissions.household")
    rows = households["value"]
    assert [r["head"] for r in rows] == ["Chef 0", "Chef 1"]
    assert {r["__Submissions-id"] for r in rows} == {instance_id}
    assert len({r["__id"] for r in rows}) == 2
    assert rows[0]["member@odata.navigationLink"] == (
        f"Submissions('{instance_id}')/household('{rows[0]['__id']}')/member"
    )
    members = get(client, feed, ".svc/Submissions.household.member").json["value"]
    assert [m["member_name"] for m in members] == [
        "Awa-0-0",
        "Awa-0-1",
        "Awa-1-0",
        "Awa-1-1",
        "Awa-1-2",
    ]
    assert [m["__Submissions-household-id"] for m in members] == [rows[0]["__id"]] * 2 + [
        rows[1]["__id"]
    ] * 3
    again = get(client, feed, ".svc/Submissions.household").json["value"]
    assert [r["__id"] for r in again] == [r["__id"] for r in rows]  # ids are stable
    one = get(client, feed, f".svc/Submissions('{instance_id}')").json["value"]
    assert [r["__id"] for r in one] == [instance_id]
    under = get(client, feed, f".svc/Submissions('{instance_id}')/household").json["value"]
    assert [r["head"] for r in under] == ["Chef 0", "Chef 1"]
    nested = get(
        client, feed, f".svc/Submissions('{instance_id}')/household('{rows[1]['__id']}')/member"
    ).json["value"]
    assert [m["member_name"] for m in nested] == ["Awa-1-0", "Awa-1-1", "Awa-1-2"]
    get(client, feed, ".svc/Submissions('uuid:nothing')", 404)
    get(client, feed, ".svc/Submissions.nothing", 404)


def test_paging_follows_skiptokens_and_never_repeats_while_records_arrive(client, feed):
    ids = [feed["add"](f"P{n}", households=1) for n in range(5)]
    first = get(client, feed, ".svc/Submissions?$top=2&$count=true").json
    assert [r["__id"] for r in first["value"]] == ids[::-1][:2]  # newest first, as Central
    assert first["@odata.count"] == 5
    link = urlsplit(first["@odata.nextLink"])
    query = parse_qs(link.query)
    assert query["$top"] == ["2"] and "$skiptoken" in query and query["$count"] == ["true"]
    late = feed["add"]("late", households=1)  # arrives between two pages
    seen = [r["__id"] for r in first["value"]]
    path = link.path + "?" + link.query
    while path:
        page = client.get(path, headers=feed["headers"]).json
        seen += [r["__id"] for r in page["value"]]
        assert page["@odata.count"] == 6
        following = page.get("@odata.nextLink")
        path = urlsplit(following).path + "?" + urlsplit(following).query if following else None
    assert seen == ids[::-1]  # every record there at the start, once; the late one not mixed in
    assert get(client, feed, ".svc/Submissions?$top=1").json["value"][0]["__id"] == late
    skipped = get(client, feed, ".svc/Submissions?$skip=4&$top=1").json
    assert [r["__id"] for r in skipped["value"]] == [ids[1]]
    following = parse_qs(urlsplit(skipped["@odata.nextLink"]).query)
    assert "$skip" not in following and "$skiptoken" in following
    bad = get(client, feed, ".svc/Submissions?$skiptoken=nonsense", 400)
    assert bad.json["code"] == 400.35
    token = base64.urlsafe_b64encode(json.dumps({"o": "seq", "s": 1}).encode()).decode()
    assert get(client, feed, f".svc/Submissions?$skiptoken={token}", 400).json["code"] == 400.35
    both = get(client, feed, f".svc/Submissions?$skip=1&$skiptoken={token}", 400)
    assert both.json["details"]["field"] == "$skip"


def test_repeat_tables_page_too(client, feed):
    for n in range(3):
        feed["add"](f"R{n}", households=2)
    rows, path = [], ".svc/Submissions.household.member?$top=4&$count=true"
    counts = set()
    while path:
        page = get(client, feed, path).json
        rows += [r["member_name"] for r in page["value"]]
        counts.add(page["@odata.count"])
        following = page.get("@odata.nextLink")
        path = following.split(feed["base"], 1)[1] if following else None
    expected = [f"R{n}-{h}-{m}" for n in (2, 1, 0) for h in range(2) for m in range(h + 2)]
    assert rows == expected and counts == {15}


def test_server_side_page_size_when_the_client_asks_for_everything(client, feed, monkeypatch):
    monkeypatch.setattr(odata_routes, "DEFAULT_PAGE", 2)  # instead of creating 1000 records
    for n in range(3):
        feed["add"](f"D{n}", households=0)
    body = get(client, feed, ".svc/Submissions").json
    assert len(body["value"]) == 2 and "@odata.nextLink" in body


def test_filter_orderby_and_select(client, feed):
    first, second = feed["add"]("Un"), feed["add"]("Deux")
    client.patch(
        f"{feed['base']}/submissions/{first}",
        json={"reviewState": "approved"},
        headers=feed["headers"],
    )
    approved = get(client, feed, ".svc/Submissions?$filter=__system/reviewState eq 'approved'")
    assert [r["__id"] for r in approved.json["value"]] == [first]
    recent = get(client, feed, ".svc/Submissions?$filter=__system/submissionDate gt 2000-01-01")
    assert len(recent.json["value"]) == 2
    rooted = get(
        client,
        feed,
        ".svc/Submissions.household?$filter=$root/Submissions/__system/reviewState eq null",
    )
    assert {r["__Submissions-id"] for r in rooted.json["value"]} == {second}
    # Central filters submissions on __system fields and __id only: a form field is its 501.5.
    bad = get(client, feed, ".svc/Submissions?$filter=name eq 'x'", 501)
    assert bad.json["code"] == 501.5
    unreadable = get(client, feed, ".svc/Submissions?$filter=__id eq", 400)
    assert unreadable.json["code"] == 400.18
    ordered = get(client, feed, ".svc/Submissions?$orderby=__system/submissionDate asc").json
    assert [r["__id"] for r in ordered["value"]] == [first, second]
    paged = get(client, feed, ".svc/Submissions?$orderby=__id asc&$top=1").json
    follow = paged["@odata.nextLink"].split(feed["base"], 1)[1]
    both_ids = [
        paged["value"][0]["__id"],
        *[r["__id"] for r in get(client, feed, follow).json["value"]],
    ]
    assert both_ids == sorted([first, second])
    get(client, feed, ".svc/Submissions?$orderby=weight", 400)
    newest = get(client, feed, ".svc/Submissions?$orderby=__system/submissionDate DESC").json
    assert [r["__id"] for r in newest["value"]] == [second, first]
    selected = get(client, feed, ".svc/Submissions?$select=__id,person/age,__system/reviewState")
    row = selected.json["value"][0]
    assert row == {"__id": second, "__system": {"reviewState": None}, "person": {"age": 34}}
    grouped = get(client, feed, ".svc/Submissions?$select=person").json["value"][0]
    assert set(grouped) == {"__id", "person"} and set(grouped["person"]) == {"first_name", "age"}
    unknown = get(client, feed, ".svc/Submissions?$select=nothing", 400)
    assert unknown.json["code"] == 400.23
    in_repeat = get(client, feed, ".svc/Submissions?$select=household/head", 400)
    assert in_repeat.json["code"] == 400.24


def test_who_may_read_the_feed(client, feed):
    assert client.get(feed["base"] + ".svc/Submissions").status_code == 401
    token = client.post(
        "/v1/sessions", json={"email": "enqueteur@example.org", "password": factories.PASSWORD}
    ).json["token"]
    refused = client.get(
        feed["base"] + ".svc/Submissions", headers={"Authorization": f"Bearer {token}"}
    )
    assert refused.status_code == 403 and refused.json["code"] == 403.1
    missing = client.get(
        f"/v1/projects/{feed['project']}/forms/nothing.svc", headers=feed["headers"]
    )
    assert missing.status_code == 404
