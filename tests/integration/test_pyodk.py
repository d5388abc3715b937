"""pyodk 1.3.0, ODK's own Python client, against a real server process: a script written for
ODK Central must run unchanged.

One ``merit serve`` per database (module-scoped); pyodk reads its configuration and token cache
from files in a temporary folder, named by ``PYODK_CONFIG_FILE`` and ``PYODK_CACHE_FILE``, and
logs in with the administrator the server creates on first start. Each test works on its own
form or entity list, so the tests do not depend on each other's rows.

pyodk calls covered: Client() login and token cache, projects.list/get/create_app_users
(with form assignments), forms.create (XLSX, draft then publish), forms.get/list/get_xml,
forms.update (new definition, and attachments-free republish with version_updater),
forms.create/update with the formIDs Central takes (``''=+/*-451%/%``, ``✅``), attachments,
a formID from the file name (X-XlsForm-FormId-Fallback on drafts too) and media missing,
submissions.create (with an attachment, sent chunked) / get / list / edit (with comment) /
review (with comment) / list_comments / add_comment / get_table (Submissions and a repeat,
top/skip/count/filter/expand/select/wkt and the nextLink), entity_lists.create/list/get/
add_property (``uuid:...`` names too), entities.create/create_many/list/update (baseVersion
and force)/delete/get_table (with filter)/merge, and PyODKError.is_central_error on Central's
codes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import toml
from pyodk.client import Client
from pyodk.errors import PyODKError

from tests.fixtures.forms import workbooks
from tests.support.openrosa import jpeg
from tests.support.servers import ServerProcess, server_env

pytestmark = pytest.mark.slow
ADMIN = ("admin@example.org", "un mot de passe de test assez long")

FORM = """
| survey |
|        | type         | name       | label   |
|        | text         | name       | Nom     |
|        | integer      | age        | Âge     |
|        | geopoint     | place      | Lieu    |
|        | image        | photo      | Photo   |
|        | begin repeat | child      | Enfant  |
|        | text         | child_name | Prénom  |
|        | end repeat   |            |         |
| settings |
|          | form_id   | version   | form_title     | instance_name   |
|          | {form_id} | {version} | Ménage (pyodk) | concat(${{name}}) |
"""


@pytest.fixture(scope="module")
def server(module_database_url, tmp_path_factory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("pyodk-server")
    env = server_env(
        module_database_url,
        tmp_path,
        ADMIN_PASSWORD=ADMIN[1],
        WORKERS="2",
    )
    with ServerProcess(env, log_path=tmp_path / "server.log") as process:
        yield process


@pytest.fixture(scope="module")
def config(server, tmp_path_factory) -> Iterator[Path]:
    """pyodk's configuration and token cache, named by its environment variables."""
    folder = tmp_path_factory.mktemp("pyodk-config")
    path = folder / "pyodk_config.toml"
    path.write_text(
        toml.dumps(
            {
                "central": {
                    "base_url": server.url,
                    "username": ADMIN[0],
                    "password": ADMIN[1],
                    "default_project_id": 1,
                }
            }
        )
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYODK_CONFIG_FILE", str(path))
        patch.setenv("PYODK_CACHE_FILE", str(folder / "pyodk_cache.toml"))
        yield folder


@pytest.fixture(scope="module")
def client(config) -> Iterator[Client]:
    with Client() as opened:
        yield opened


def workbook(folder: Path, form_id: str, version: str = "1") -> Path:
    path = folder / f"{form_id}.xlsx"
    path.write_bytes(workbooks.xlsx(FORM.format(form_id=form_id, version=version)))
    return path


@pytest.fixture(scope="module")
def form_id(client, tmp_path_factory) -> str:
    """A published form, uploaded as an XLSX through pyodk (draft, then publish)."""
    folder = tmp_path_factory.mktemp("pyodk-form")
    created = client.forms.create(definition=workbook(folder, "pyodk_menage"))
    return created.xmlFormId


def record(form_id: str, instance_id: str, name: str, *, deprecated: str | None = None) -> str:
    meta = f"<deprecatedID>{deprecated}</deprecatedID>" if deprecated else ""
    return (
        f'<data id="{form_id}" version="1"><name>{name}</name><age>34</age>'
        "<place>12.65 -8.0 350 5</place><photo>photo.jpg</photo>"
        f"<child><child_name>{name} junior</child_name></child>"
        f"<meta><instanceID>{instance_id}</instanceID><instanceName>{name}</instanceName>{meta}"
        "</meta></data>"
    )


def new_id() -> str:
    return f"uuid:{uuid.uuid4()}"


def test_login_caches_a_token_that_a_second_client_reuses(client, config):
    projects = client.projects.list()
    assert [p.id for p in projects] == [1]
    project = client.projects.get(1)
    assert project.name == "Programme Mali" and project.createdAt is not None
    cached = toml.loads((config / "pyodk_cache.toml").read_text())["token"]
    assert client.session.headers["Authorization"] == f"Bearer {cached}"
    with Client() as again:  # verifies the cached token with GET /users/current
        assert again.projects.get(1).id == 1
        assert again.session.headers["Authorization"] == f"Bearer {cached}"


def test_forms_upload_update_and_download(client, tmp_path):
    created = client.forms.create(definition=workbook(tmp_path, "pyodk_versions"))
    assert created.xmlFormId == "pyodk_versions" and created.version == "1"
    published = client.forms.get("pyodk_versions")
    assert published.publishedAt is not None and published.state == "open"
    client.forms.update("pyodk_versions", definition=workbook(tmp_path, "pyodk_versions", "2"))
    assert client.forms.get("pyodk_versions").version == "2"
    xml = client.forms.get_xml("pyodk_versions")
    assert 'version="2"' in xml and "<h:title>Ménage (pyodk)</h:title>" in xml
    client.forms.update(
        "pyodk_versions", attachments=[], version_updater=lambda version: f"{version}.1"
    )
    assert client.forms.get("pyodk_versions").version == "2.1"
    assert "pyodk_versions" in [f.xmlFormId for f in client.forms.list()]
    changed = tmp_path / "changed.xlsx"
    changed.write_bytes(
        workbooks.xlsx(FORM.format(form_id="pyodk_versions", version="1").replace("Âge", "Age"))
    )
    with pytest.raises(PyODKError) as refused:  # another XForm under a published version
        client.forms.update("pyodk_versions", definition=changed)
    assert refused.value.is_central_error("409.6")


MEDIA_FORM = """
| survey |
|        | type                              | name    | label   |
|        | select_one_from_file villages.csv | village | Village |
| settings |
|          | {id_column} | version   | form_title        |
|          | {form_id}   | {version} | Villages (pyodk)  |
"""


def media_workbook(path: Path, form_id: str | None, version: str) -> Path:
    """A form that needs villages.csv; with ``form_id`` None its settings name none."""
    text = MEDIA_FORM.format(
        id_column="form_id" if form_id else "title_", form_id=form_id or "", version=version
    )
    path.write_bytes(workbooks.xlsx(text))
    return path


def test_forms_with_the_ids_central_takes_are_created_published_and_updated(client, tmp_path):
    villages = tmp_path / "villages.csv"
    villages.write_bytes(workbooks.data("villages.csv"))
    for odd in ("''=+/*-451%/%", "✅ ménage"):
        created = client.forms.create(
            definition=media_workbook(tmp_path / "f.xlsx", odd, "1"), attachments=[villages]
        )
        assert created.xmlFormId == odd
        assert client.forms.get(odd).publishedAt is not None
        attached = client.get(f"projects/1/forms/{quote(odd, safe='')}/attachments").json()
        assert [(a["name"], a["exists"]) for a in attached] == [("villages.csv", True)]
        # A new file with new attachments, then new attachments alone.
        villages.write_bytes(workbooks.data("villages.csv") + b"kati,Kati,Kati\n")
        client.forms.update(
            odd,
            definition=media_workbook(tmp_path / "f.xlsx", odd, "2"),
            attachments=[villages],
        )
        client.forms.update(odd, attachments=[villages], version_updater=lambda v: f"{v}.1")
        assert client.forms.get(odd).version == "2.1"
        assert (
            "kati"
            in client.get(f"projects/1/forms/{quote(odd, safe='')}/attachments/villages.csv").text
        )
        assert odd in [f.xmlFormId for f in client.forms.list()]


def test_a_form_named_by_its_file_is_updated_from_another_file_and_published_without_media(
    client, tmp_path
):
    """pyodk sends the file name (then the formID) as X-XlsForm-FormId-Fallback; with the
    settings sheet naming no form_id, creation and every new draft take it."""
    first = media_workbook(tmp_path / "Villages pilote ✅.xlsx", None, "1")
    created = client.forms.create(definition=first)  # villages.csv not attached: published
    assert created.xmlFormId == "Villages pilote ✅"
    form_id = created.xmlFormId
    missing = client.get(f"projects/1/forms/{quote(form_id, safe='')}/attachments").json()
    assert [(a["name"], a["exists"]) for a in missing] == [("villages.csv", False)]
    client.forms.update(form_id, definition=media_workbook(tmp_path / "v2.xlsx", None, "2"))
    assert client.forms.get(form_id).version == "2"


def test_entity_lists_named_as_central_allows(client):
    name = "uuid:9f1c2e4b-6a3d-4e8f-9b2a-1c2d3e4f5a6b"
    created = client.entity_lists.create(entity_list_name=name)
    assert created.name == name
    assert client.entity_lists.add_property(name="région", entity_list_name=name) is True
    assert [p.name for p in client.entity_lists.get(entity_list_name=name).properties] == ["région"]
    added = client.entities.create(label="Kati", data={"région": "ML02"}, entity_list_name=name)
    table = client.entities.get_table(entity_list_name=name)["value"]
    assert [(r["__id"], r["label"]) for r in table] == [(added.uuid, "Kati")]


def test_app_users_are_created_once_and_given_the_form(client, form_id):
    users = client.projects.create_app_users(
        display_names=["Tablette Ségou", "Tablette Mopti"], forms=[form_id]
    )
    assert sorted(u.displayName for u in users) == ["Tablette Mopti", "Tablette Ségou"]
    assert all(u.token and u.type == "field_key" and u.projectId == 1 for u in users)
    assert client.projects.create_app_users(display_names=["Tablette Ségou"]) == []
    assigned = client.get(f"projects/1/forms/{form_id}/assignments/2").json()
    assert {a["actorId"] for a in assigned} >= {u.id for u in users}


def test_submissions_create_edit_review_and_comment(client, form_id, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg(11, size=50_000))  # sent by pyodk with Transfer-Encoding: chunked
    instance_id = new_id()
    created = client.submissions.create(
        record(form_id, instance_id, "Awa"),
        form_id=form_id,
        device_id="pyodk-test",
        attachments=[photo],
    )
    assert created.instanceId == instance_id and created.deviceId == "pyodk-test"
    assert [(a.name, a.exists) for a in created.attachments] == [("photo.jpg", True)]
    downloaded = client.get(
        f"projects/1/forms/{form_id}/submissions/{instance_id}/attachments/photo.jpg"
    )
    assert downloaded.content == photo.read_bytes()
    fetched = client.submissions.get(instance_id, form_id=form_id)
    assert fetched.instanceName == "Awa" and fetched.reviewState is None
    assert instance_id in [s.instanceId for s in client.submissions.list(form_id=form_id)]
    with pytest.raises(PyODKError) as duplicate:
        client.submissions.create(record(form_id, instance_id, "Awa"), form_id=form_id)
    assert duplicate.value.is_central_error("409.3")

    edited_id = new_id()
    client.submissions.edit(
        instance_id,
        record(form_id, edited_id, "Awa Traoré", deprecated=instance_id),
        form_id=form_id,
        comment="Nom complet corrigé",
    )
    after_edit = client.submissions.get(instance_id, form_id=form_id)
    assert after_edit.reviewState == "edited" and after_edit.instanceName == "Awa Traoré"
    with pytest.raises(PyODKError) as stale:
        client.submissions.edit(
            instance_id, record(form_id, new_id(), "X", deprecated=instance_id), form_id=form_id
        )
    assert stale.value.is_central_error("400.19")
    client.submissions.review(
        instance_id, review_state="approved", form_id=form_id, comment="Vérifié"
    )
    assert client.submissions.get(instance_id, form_id=form_id).reviewState == "approved"
    client.submissions.add_comment(instance_id, "Merci", form_id=form_id)
    comments = client.submissions.list_comments(instance_id, form_id=form_id)
    assert [c.body for c in comments] == ["Nom complet corrigé", "Vérifié", "Merci"]
    # The edit carried the photo forward.
    attachments = client.get(f"projects/1/forms/{form_id}/submissions/{instance_id}/attachments")
    assert attachments.json() == [{"name": "photo.jpg", "exists": True}]


def test_odata_tables_page_by_page(client, form_id):
    names = [f"Page {n}" for n in range(5)]
    ids = []
    for name in names:
        instance_id = new_id()
        client.submissions.create(record(form_id, instance_id, name), form_id=form_id)
        ids.append(instance_id)
    client.submissions.review(ids[0], review_state="rejected", form_id=form_id)
    total = client.submissions.get_table(form_id=form_id, count=True)["@odata.count"]
    first = client.submissions.get_table(form_id=form_id, top=2, count=True)
    assert len(first["value"]) == 2 and first["@odata.count"] == total
    seen = [row["__id"] for row in first["value"]]
    link = first.get("@odata.nextLink")
    while link:
        page = client.get(link).json()
        seen += [row["__id"] for row in page["value"]]
        link = page.get("@odata.nextLink")
    assert len(seen) == len(set(seen)) == total and set(ids) <= set(seen)
    assert seen[:5] == ids[::-1]  # newest first, as Central

    skipped = client.submissions.get_table(form_id=form_id, skip=1, top=2)
    assert [r["__id"] for r in skipped["value"]] == ids[::-1][1:3]
    rejected = client.submissions.get_table(
        form_id=form_id, filter="__system/reviewState eq 'rejected'"
    )
    assert [r["__id"] for r in rejected["value"]] == [ids[0]]
    row = client.submissions.get_table(form_id=form_id, top=1, wkt=True)["value"][0]
    assert row["place"] == "POINT (-8 12.65 350)" and row["age"] == 34
    assert row["__system"]["submitterName"] == "Administrateur"  # the server speaks French
    expanded = client.submissions.get_table(form_id=form_id, top=1, expand="*")["value"][0]
    assert expanded["child"][0]["child_name"] == "Page 4 junior"
    selected = client.submissions.get_table(form_id=form_id, top=1, select="__id,name")
    assert set(selected["value"][0]) == {"__id", "name"}
    children = client.submissions.get_table(
        form_id=form_id,
        table_name="Submissions.child",
        filter="$root/Submissions/__system/reviewState eq 'rejected'",
    )
    assert [(r["child_name"], r["__Submissions-id"]) for r in children["value"]] == [
        ("Page 0 junior", ids[0])
    ]
    with pytest.raises(PyODKError) as bad:
        client.submissions.get_table(form_id=form_id, filter="__system/nothing eq 1")
    assert bad.value.is_central_error("501.5")  # Central's unsupportedODataField


def test_entity_lists_and_entities(client):
    name = "villages_pyodk"
    created = client.entity_lists.create(entity_list_name=name, approval_required=False)
    assert created.name == name and created.projectId == 1 and created.approvalRequired is False
    assert name in [e.name for e in client.entity_lists.list()]
    assert client.entity_lists.add_property(name="region", entity_list_name=name) is True
    described = client.entity_lists.get(entity_list_name=name)
    assert [p.name for p in described.properties] == ["region"]
    with pytest.raises(PyODKError) as again:
        client.entity_lists.create(entity_list_name=name)
    assert again.value.is_central_error("409.3")

    segou = client.entities.create(label="Ségou", data={"region": "ML04"}, entity_list_name=name)
    assert segou.currentVersion.version == 1 and segou.currentVersion.data == {"region": "ML04"}
    assert segou.currentVersion.userAgent.startswith("pyodk")
    assert client.entities.create_many(
        [{"label": "Mopti", "region": "ML05"}, {"label": "Kayes", "region": "ML01"}],
        entity_list_name=name,
        source_size="2",
    )
    listed = client.entities.list(entity_list_name=name)
    assert sorted(e.currentVersion.label for e in listed) == ["Kayes", "Mopti", "Ségou"]
    updated = client.entities.update(
        segou.uuid, entity_list_name=name, label="Segou", base_version=1
    )
    assert updated.currentVersion.version == 2 and updated.currentVersion.label == "Segou"
    with pytest.raises(PyODKError) as conflict:
        client.entities.update(segou.uuid, entity_list_name=name, label="Ségou", base_version=1)
    assert conflict.value.is_central_error("409.15")
    forced = client.entities.update(
        segou.uuid, entity_list_name=name, data={"region": "ML4"}, force=True
    )
    assert forced.currentVersion.version == 3
    table = client.entities.get_table(entity_list_name=name, count=True)
    assert table["@odata.count"] == 3
    row = next(r for r in table["value"] if r["__id"] == segou.uuid)
    assert row["label"] == "Segou" and row["region"] == "ML4"
    assert row["__system"]["version"] == 3
    # $filter on Central's entity fields; the label and properties are refused as by Central.
    updated_only = client.entities.get_table(
        entity_list_name=name, filter="__system/updatedAt ne null", count=True
    )
    assert [r["__id"] for r in updated_only["value"]] == [segou.uuid]
    assert updated_only["@odata.count"] == 1
    by_id = client.entities.get_table(
        entity_list_name=name,
        filter=f"__id eq '{segou.uuid}' or year(__system/createdAt) lt 2000",
        select="__id,label",
    )
    assert by_id["value"] == [{"__id": segou.uuid, "label": "Segou"}]
    with pytest.raises(PyODKError) as by_label:
        client.entities.get_table(entity_list_name=name, filter="label eq 'Segou'")
    assert by_label.value.is_central_error("501.5")

    # merge: add a property, insert one, update one, delete the ones not given.
    actions = client.entities.merge(
        [
            {"label": "Segou", "region": "ML04", "population": "130000"},
            {"label": "Tombouctou", "region": "ML06", "population": "55000"},
        ],
        entity_list_name=name,
        delete_not_matched=True,
    )
    assert set(actions.to_insert) == {("Tombouctou",)}
    assert set(actions.to_delete) == {("Kayes",), ("Mopti",)}
    after = client.entities.get_table(entity_list_name=name)["value"]
    assert sorted((r["label"], r["region"], r["population"]) for r in after) == [
        ("Segou", "ML04", "130000"),
        ("Tombouctou", "ML06", "55000"),
    ]
    gone = next(e for e in listed if e.currentVersion.label == "Kayes")
    with pytest.raises(PyODKError):
        client.entities.delete(gone.uuid, entity_list_name=name)  # already deleted by merge
    assert client.entities.delete(segou.uuid, entity_list_name=name) is True
    assert [r["label"] for r in client.entities.get_table(entity_list_name=name)["value"]] == [
        "Tombouctou"
    ]
