"""Forms over HTTP, in ODK Central's shapes (what pyodk and Central's frontend call)."""

from __future__ import annotations

import hashlib

import pytest

from tests.fixtures.forms import workbooks
from tests.support import factories

# Keys pyodk 1.3.0 requires on a Form (central-api.md §2), plus the rest Central sends.
FORM_KEYS = {
    "projectId",
    "xmlFormId",
    "state",
    "enketoId",
    "enketoOnceId",
    "name",
    "version",
    "keyId",
    "hash",
    "sha",
    "sha256",
    "draftToken",
    "publishedAt",
    "createdAt",
    "updatedAt",
}
XLSX = workbooks.XLSX_TYPE


@pytest.fixture
def manager(client, db_session):
    project = factories.project(db_session, "Programme Mali")
    factories.user(db_session, "coord@example.org", role="manager", project_id=project.id)
    factories.user(db_session, "analyste@example.org", role="viewer", project_id=project.id)

    def login(email: str) -> dict[str, str]:
        token = client.post(
            "/v1/sessions", json={"email": email, "password": factories.PASSWORD}
        ).json["token"]
        return {"Authorization": f"Bearer {token}"}

    return {
        "project_id": project.id,
        "base": f"/v1/projects/{project.id}",
        "headers": login("coord@example.org"),
        "viewer": login("analyste@example.org"),
    }


def upload(client, manager, body: bytes, content_type: str = XLSX, query: str = "", **headers):
    return client.post(
        f"{manager['base']}/forms{query}",
        data=body,
        headers={**manager["headers"], "Content-Type": content_type, **headers},
    )


def test_upload_xlsx_answers_the_form_with_every_central_key(client, manager):
    response = upload(client, manager, workbooks.xlsx(workbooks.simple("1")))
    assert response.status_code == 200, response.json
    body = response.json
    assert set(body) == FORM_KEYS
    assert body["xmlFormId"] == "simple" and body["projectId"] == manager["project_id"]
    assert body["state"] == "open" and body["version"] == "1"
    assert body["name"] == "Formulaire simple"
    assert body["publishedAt"] is None and len(body["draftToken"]) == 64
    assert body["enketoId"] is None and body["keyId"] is None


def test_publish_true_is_case_insensitive_and_the_xml_is_served_byte_for_byte(client, manager):
    response = upload(client, manager, workbooks.xlsx(workbooks.simple("1")), query="?publish=True")
    body = response.json
    assert body["publishedAt"] is not None and body["draftToken"] is None
    xml = client.get(f"{manager['base']}/forms/simple.xml", headers=manager["headers"])
    assert xml.status_code == 200
    assert xml.mimetype == "application/xml"
    assert hashlib.md5(xml.data).hexdigest() == body["hash"]
    assert hashlib.sha256(xml.data).hexdigest() == body["sha256"]
    assert hashlib.sha1(xml.data).hexdigest() == body["sha"]


def test_list_and_get_forms(client, manager):
    upload(client, manager, workbooks.xlsx(workbooks.simple("1")), query="?publish=true")
    upload(client, manager, workbooks.xlsx(workbooks.simple("1", form_id="autre")))
    listed = client.get(f"{manager['base']}/forms", headers=manager["headers"]).json
    assert [f["xmlFormId"] for f in listed] == ["autre", "simple"]
    assert all(set(f) == FORM_KEYS for f in listed)
    one = client.get(f"{manager['base']}/forms/simple", headers=manager["viewer"])
    assert one.status_code == 200 and one.json["xmlFormId"] == "simple"
    assert (
        client.get(f"{manager['base']}/forms/nope", headers=manager["headers"]).status_code == 404
    )


def test_bad_spreadsheet_is_400_with_located_errors_in_the_callers_language(client, manager):
    response = upload(
        client,
        manager,
        workbooks.xlsx(workbooks.text("broken.md")),
        **{"Content-Disposition": 'attachment; filename="broken.xlsx"', "Accept-Language": "fr"},
    )
    assert response.status_code == 400
    body = response.json
    assert body["code"] == 400.15
    assert "broken.xlsx" in body["message"] and "n’a pas pu être compilé" in body["message"]
    [error] = body["details"]["errors"]
    assert (error["sheet"], error["row"], error["column"]) == ("survey", 3, "name")
    english = upload(
        client, manager, workbooks.data("broken.md"), "text/markdown", **{"Accept-Language": "en"}
    )
    assert english.json["message"].startswith("The form")


def test_warnings_need_ignore_warnings(client, manager):
    body = workbooks.xlsx(workbooks.text("warnings.md"))
    refused = upload(client, manager, body)
    assert refused.status_code == 400 and refused.json["code"] == 400.16
    assert refused.json["details"]["warnings"][0]["sheet"] == "choices"
    accepted = upload(client, manager, body, query="?ignoreWarnings=TRUE")
    assert accepted.status_code == 200


def test_form_id_fallback_header(client, manager):
    markdown = "| survey |\n| | type | name | label |\n| | text | q | Q |\n"
    response = upload(
        client, manager, workbooks.xlsx(markdown), **{"X-XlsForm-FormId-Fallback": "enqu%C3%AAte"}
    )
    assert response.json["xmlFormId"] == "enquête"


def test_xform_upload_and_unreadable_bodies(client, manager):
    from server.forms import compiler

    xml = compiler.compile_upload(workbooks.data("simple.md"), filename="s.md").xml
    created = upload(client, manager, xml.encode(), "application/xml", query="?publish=true")
    assert created.status_code == 200
    served = client.get(f"{manager['base']}/forms/simple.xml", headers=manager["headers"])
    assert served.data == xml.encode()
    assert (
        client.get(f"{manager['base']}/forms/simple.xlsx", headers=manager["headers"]).status_code
        == 404
    )
    for body, kind in [(b"<!DOCTYPE x><x/>", "text/xml"), (b"junk", XLSX), (b"", XLSX)]:
        response = upload(client, manager, body, kind)
        assert response.status_code == 400, (body, response.json)
        assert response.json["message"]


def test_access_rules(client, manager):
    body = workbooks.xlsx(workbooks.simple("1"))
    anonymous = client.post(f"{manager['base']}/forms", data=body, headers={"Content-Type": XLSX})
    assert anonymous.status_code == 401
    viewer = client.post(
        f"{manager['base']}/forms", data=body, headers={**manager["viewer"], "Content-Type": XLSX}
    )
    assert viewer.status_code == 403
    assert client.get("/v1/projects/999/forms", headers=manager["headers"]).status_code == 404


def test_draft_media_publish_and_versions_over_http(client, manager):
    base, headers = manager["base"], manager["headers"]
    created = upload(client, manager, workbooks.xlsx(workbooks.text("household.md")))
    assert created.status_code == 200
    listed = client.get(f"{base}/forms/household/draft/attachments", headers=headers).json
    assert [(a["name"], a["exists"]) for a in listed] == [
        ("besoins.png", False),
        ("needs.png", False),
        ("villages.csv", False),
    ]
    assert set(listed[0]) == {
        "name",
        "type",
        "hash",
        "exists",
        "blobExists",
        "datasetExists",
        "updatedAt",
    }
    for name, content, kind in [
        ("besoins.png", b"\x89PNG fr", "image/png"),
        ("needs.png", b"\x89PNG en", "image/png"),
        ("villages.csv", workbooks.data("villages.csv"), "text/csv"),
    ]:
        stored = client.post(
            f"{base}/forms/household/draft/attachments/{name}",
            data=content,
            headers={**headers, "Content-Type": kind},
        )
        assert stored.status_code == 200
        assert stored.json["success"] is True and stored.json["exists"] is True
        assert stored.json["hash"] == hashlib.md5(content).hexdigest()
    unknown = client.post(
        f"{base}/forms/household/draft/attachments/autre.png", data=b"x", headers=headers
    )
    assert unknown.status_code == 404
    draft = client.get(f"{base}/forms/household/draft", headers=headers).json
    assert draft["publishedAt"] is None and draft["draftToken"]
    published = client.post(f"{base}/forms/household/draft/publish", headers=headers)
    assert published.json == {"success": True}
    media = client.get(f"{base}/forms/household/attachments", headers=headers).json
    assert all(a["exists"] for a in media)

    # A new draft copied from the published version, published under a new version.
    assert client.post(f"{base}/forms/household/draft", headers=headers).json == {"success": True}
    again = client.post(f"{base}/forms/household/draft/publish", headers=headers)
    assert again.status_code == 200  # identical XForm and media: harmless
    client.post(f"{base}/forms/household/draft", headers=headers)
    renamed = client.post(f"{base}/forms/household/draft/publish?version=v2", headers=headers)
    assert renamed.status_code == 200
    versions = client.get(f"{base}/forms/household/versions", headers=headers).json
    assert [v["version"] for v in versions] == ["v2", "2024050701"]
    old = client.get(f"{base}/forms/household/versions/2024050701.xml", headers=headers)
    assert hashlib.md5(old.data).hexdigest() == versions[1]["hash"]
    source = client.get(f"{base}/forms/household.xlsx", headers=headers)
    assert source.status_code == 200 and source.data[:2] == b"PK"


def test_new_draft_with_changed_xml_under_the_same_version_is_409(client, manager):
    base, headers = manager["base"], manager["headers"]
    upload(client, manager, workbooks.xlsx(workbooks.simple("1")), query="?publish=true")
    changed = workbooks.xlsx(workbooks.simple("1", extra_question=True))
    drafted = client.post(
        f"{base}/forms/simple/draft", data=changed, headers={**headers, "Content-Type": XLSX}
    )
    assert drafted.json == {"success": True}
    conflict = client.post(f"{base}/forms/simple/draft/publish", headers=headers)
    assert conflict.status_code == 409 and conflict.json["code"] == 409.6
    assert client.delete(f"{base}/forms/simple/draft", headers=headers).json == {"success": True}
    assert client.get(f"{base}/forms/simple/draft", headers=headers).status_code == 404


def test_states(client, manager):
    base, headers = manager["base"], manager["headers"]
    upload(client, manager, workbooks.xlsx(workbooks.simple("1")), query="?publish=true")
    closing = client.patch(f"{base}/forms/simple", json={"state": "closing"}, headers=headers)
    assert closing.json["state"] == "closing"
    bad = client.patch(f"{base}/forms/simple", json={"state": "archived"}, headers=headers)
    assert bad.status_code == 400 and bad.json["code"] == 400.8
    by_viewer = client.patch(
        f"{base}/forms/simple", json={"state": "open"}, headers=manager["viewer"]
    )
    assert by_viewer.status_code == 403


def test_a_tablet_downloads_the_xform_of_an_assigned_form_only(client, manager, db_session):
    base, headers = manager["base"], manager["headers"]
    upload(client, manager, workbooks.xlsx(workbooks.simple("1")), query="?publish=true")
    app_user = client.post(
        f"{base}/app-users", json={"displayName": "Tablette"}, headers=headers
    ).json
    key = f"/v1/key/{app_user['token']}/projects/{manager['project_id']}"
    assert client.get(f"{key}/forms/simple.xml").status_code == 404
    client.post(f"{base}/forms/simple/assignments/2/{app_user['id']}", headers=headers)
    served = client.get(f"{key}/forms/simple.xml")
    assert served.status_code == 200 and served.data.startswith(b"<?xml")
    assert served.headers["X-OpenRosa-Version"] == "1.0"


def test_fields_list_every_field_as_central_does_for_ruodk(client, manager):
    base, headers, viewer = manager["base"], manager["headers"], manager["viewer"]
    body = workbooks.xlsx(workbooks.text("household.md"))
    assert upload(client, manager, body, query="?ignoreWarnings=true").status_code == 200
    draft = client.get(f"{base}/forms/household/draft/fields", headers=headers)
    assert draft.status_code == 200
    fields = {f["path"]: f for f in draft.json}
    assert all(set(f) == {"path", "name", "type", "binary", "selectMultiple"} for f in draft.json)
    assert fields["/respondent"] == {
        "path": "/respondent",
        "name": "respondent",
        "type": "structure",
        "binary": None,
        "selectMultiple": None,
    }
    assert fields["/respondent/age"]["type"] == "int"
    assert fields["/household"]["type"] == "repeat"
    assert fields["/household/member/sex"]["type"] == "string"
    assert fields["/household/member/sex"]["selectMultiple"] is None
    assert (fields["/needs"]["type"], fields["/needs"]["selectMultiple"]) == ("string", True)
    assert (fields["/photo"]["type"], fields["/photo"]["binary"]) == ("binary", True)
    assert fields["/meta/instanceID"]["type"] == "string"
    # No published version yet; a viewer may not see the draft.
    assert client.get(f"{base}/forms/household/fields", headers=headers).status_code == 404
    assert client.get(f"{base}/forms/household/draft/fields", headers=viewer).status_code == 403
    for name, content in [
        ("besoins.png", b"\x89PNG fr"),
        ("needs.png", b"\x89PNG en"),
        ("villages.csv", workbooks.data("villages.csv")),
    ]:
        client.post(
            f"{base}/forms/household/draft/attachments/{name}", data=content, headers=headers
        )
    published = client.post(f"{base}/forms/household/draft/publish", headers=headers)
    assert published.status_code == 200, published.json
    listed = client.get(f"{base}/forms/household/fields?odata=True", headers=viewer)
    assert listed.status_code == 200
    assert [f["path"] for f in listed.json] == [f["path"] for f in draft.json]
    version = client.get(f"{base}/forms/household/versions/2024050701/fields", headers=viewer)
    assert version.json == draft.json
    assert (
        client.get(f"{base}/forms/household/versions/9/fields", headers=viewer).status_code == 404
    )


def test_a_form_never_published_exists_only_for_those_who_may_change_it(client, manager):
    base = manager["base"]
    upload(client, manager, workbooks.xlsx(workbooks.simple("1")), query="?publish=true")
    upload(client, manager, workbooks.xlsx(workbooks.simple("1", form_id="brouillon")))
    as_manager = client.get(f"{base}/forms", headers=manager["headers"]).json
    as_viewer = client.get(f"{base}/forms", headers=manager["viewer"]).json
    assert [f["xmlFormId"] for f in as_manager] == ["brouillon", "simple"]
    assert [f["xmlFormId"] for f in as_viewer] == ["simple"]
    assert client.get(f"{base}/forms/brouillon", headers=manager["viewer"]).status_code == 404
    assert client.get(f"{base}/forms/brouillon", headers=manager["headers"]).status_code == 200
    # Once published, the analyst sees it.
    client.post(f"{base}/forms/brouillon/draft/publish", headers=manager["headers"])
    assert client.get(f"{base}/forms/brouillon", headers=manager["viewer"]).status_code == 200
