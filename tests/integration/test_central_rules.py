"""Where ODK Central is more liberal than a careful server would be, do as Central does
(issue 18): any formID, percent-encoded in paths (``%2F`` and ``%25`` included) through the
API, OData and OpenRosa; publishing with media still missing (the API at once, the console
once the coordinator confirms); Central's entity list names (``uuid:...``); and
``X-XlsForm-FormId-Fallback`` on a new draft as on creation.

One real server (gunicorn, ``merit serve``) per database: gunicorn's own raw request path
is what the routing reads. Requests are sent with the exact bytes of their paths.
"""

from __future__ import annotations

import hashlib
import html
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import pytest
import requests

from tests.fixtures.forms import workbooks
from tests.support import openrosa
from tests.support.servers import ADMIN_EMAIL, ADMIN_PASSWORD, ServerProcess, server_env

pytestmark = pytest.mark.slow

XML = "application/xml"
ATTR = {'"': "&quot;"}
FORMLIST = "{http://openrosa.org/xforms/xformsList}"
MANIFEST = "{http://openrosa.org/xforms/xformsManifest}"

# Central's own examples, and the shapes that break naive routing or file paths.
ODD_IDS = [
    "''=+/*-451%/%",
    "✅",
    "a/b",
    "../x",
    "50%2F moitié",
    "q?x#y&z",
]


@pytest.fixture(scope="module")
def server(module_database_url, tmp_path_factory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("central-rules")
    env = server_env(module_database_url, tmp_path, WORKERS="1", THREADS="8")
    with ServerProcess(env, log_path=tmp_path / "server.log") as process:
        process.tmp_path = tmp_path  # type: ignore[attr-defined]
        yield process


@pytest.fixture(scope="module")
def api(server) -> requests.Session:
    session = requests.Session()
    answer = session.post(
        f"{server.url}/v1/sessions",
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        timeout=30,
    )
    answer.raise_for_status()
    session.headers["Authorization"] = f"Bearer {answer.json()['token']}"
    return session


@pytest.fixture(scope="module")
def console(server) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{server.url}/login", timeout=30)
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)[1]
    session.post(
        f"{server.url}/login",
        data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "login_token": token},
        timeout=30,
    ).raise_for_status()
    home = session.get(f"{server.url}/", timeout=30).text
    session.csrf = re.search(r'name="csrf_token" value="([^"]+)"', home)[1]  # type: ignore[attr-defined]
    return session


def xform(form_id: str, version: str = "1") -> bytes:
    """The test XForm (it needs ``villages.csv``) under ``form_id``, escaped as XML wants."""
    return openrosa.XFORM.format(form_id=escape(form_id, ATTR), version=version).encode()


def path_of(form_id: str, *, lower: bool = False) -> str:
    """The formID as one path segment, percent-encoded (lower-case hex if ``lower``)."""
    encoded = quote(form_id, safe="")
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded) if lower else encoded


def get(session: requests.Session, url: str, **kwargs) -> requests.Response:
    return session.get(url, timeout=30, **kwargs)


def post(session: requests.Session, url: str, **kwargs) -> requests.Response:
    return session.post(url, timeout=60, **kwargs)


def submit(session: requests.Session, base: str, form_id: str) -> str:
    instance_id = f"uuid:{uuid.uuid4()}"
    xml = openrosa.record(instance_id, form_id=escape(form_id, ATTR), version="1", photo=None)
    answer = post(
        session,
        f"{base}/v1/projects/1/submission",
        files={"xml_submission_file": ("record.xml", xml, "text/xml")},
        headers=openrosa.OPENROSA,
    )
    assert answer.status_code == 201, answer.text
    return instance_id


def create_with_media(api: requests.Session, url: str, form_id: str) -> None:
    """Create the form as a draft, attach its CSV through the odd path, publish."""
    created = post(
        api, f"{url}/v1/projects/1/forms", data=xform(form_id), headers={"Content-Type": XML}
    )
    assert created.status_code == 200, created.text
    assert created.json()["xmlFormId"] == form_id
    base = f"{url}/v1/projects/1/forms/{path_of(form_id)}"
    attached = post(
        api,
        f"{base}/draft/attachments/villages.csv",
        data=workbooks.data("villages.csv"),
        headers={"Content-Type": "text/csv"},
    )
    assert attached.status_code == 200 and attached.json()["exists"] is True, attached.text
    published = post(api, f"{base}/draft/publish")
    assert published.json() == {"success": True}, published.text


# ---- form IDs --------------------------------------------------------------------------------


@pytest.mark.parametrize("form_id", ODD_IDS)
def test_any_form_id_central_takes_works_through_the_api_odata_and_openrosa(
    server, api, console, form_id
):
    url = server.url
    create_with_media(api, url, form_id)
    for segment in (path_of(form_id), path_of(form_id, lower=True)):
        base = f"{url}/v1/projects/1/forms/{segment}"
        one = get(api, base)
        assert one.status_code == 200 and one.json()["xmlFormId"] == form_id, one.text
        xml = get(api, f"{base}.xml")
        assert hashlib.md5(xml.content).hexdigest() == one.json()["hash"]
    base = f"{url}/v1/projects/1/forms/{path_of(form_id)}"

    # Collect: the form list names the form and links it percent-encoded; the links work.
    listing = ElementTree.fromstring(get(api, f"{url}/v1/projects/1/formList").content)
    entry = next(
        x for x in listing.iter(f"{FORMLIST}xform") if x.findtext(f"{FORMLIST}formID") == form_id
    )
    download = entry.findtext(f"{FORMLIST}downloadUrl")
    assert urlsplit(download).path == f"/v1/projects/1/forms/{path_of(form_id)}.xml"
    assert get(api, download).content == get(api, f"{base}.xml").content
    manifest = ElementTree.fromstring(get(api, entry.findtext(f"{FORMLIST}manifestUrl")).content)
    media = manifest.find(f"{MANIFEST}mediaFile")
    assert media.findtext(f"{MANIFEST}filename") == "villages.csv"
    csv = get(api, media.findtext(f"{MANIFEST}downloadUrl"))
    assert csv.status_code == 200 and csv.content == workbooks.data("villages.csv")

    # A record sent as Collect sends it, read back by the API and OData.
    instance_id = submit(api, url, form_id)
    listed = get(api, f"{base}/submissions").json()
    assert [s["instanceId"] for s in listed] == [instance_id]
    service = get(api, f"{base}.svc").json()
    assert (
        service["@odata.context"] == f"{url}/v1/projects/1/forms/{path_of(form_id)}.svc/$metadata"
    )
    assert get(api, f"{base}.svc/$metadata").status_code == 200
    rows = get(api, f"{base}.svc/Submissions").json()["value"]
    assert [r["__id"] for r in rows] == [instance_id]
    one_row = get(api, f"{base}.svc/Submissions('{quote(instance_id, safe='')}')").json()
    assert [r["__id"] for r in one_row["value"]] == [instance_id]

    # The console links the form by its encoded ID, and the links open it.
    project = get(console, f"{url}/projects/1")
    hrefs = {html.unescape(h) for h in re.findall(r'href="([^"]+)"', project.text)}
    segments = {h.split("/")[4] for h in hrefs if re.fullmatch(r"/projects/1/forms/[^/]+", h)}
    assert form_id in {unquote(s) for s in segments}
    href = next(f"/projects/1/forms/{s}" for s in segments if unquote(s) == form_id)
    page = get(console, f"{url}{href}")
    assert page.status_code == 200 and form_id in html.unescape(page.text)
    submissions = get(console, f"{url}{href}/submissions")
    assert submissions.status_code == 200 and instance_id in submissions.text


def test_an_encoded_slash_names_one_form_and_a_real_slash_does_not(server, api):
    url = server.url
    for form_id in ("tranche", "tranche/1"):
        post(
            api,
            f"{url}/v1/projects/1/forms?publish=true",
            data=xform(form_id).replace(b"villages.csv", b"tranche.csv"),
            headers={"Content-Type": XML},
        ).raise_for_status()
    assert get(api, f"{url}/v1/projects/1/forms/tranche%2F1").json()["xmlFormId"] == "tranche/1"
    assert get(api, f"{url}/v1/projects/1/forms/tranche").json()["xmlFormId"] == "tranche"
    assert get(api, f"{url}/v1/projects/1/forms/tranche/1").status_code == 404
    # %25 is a percent sign, never the start of another escape.
    assert get(api, f"{url}/v1/projects/1/forms/tranche%252F1").status_code == 404


def test_form_ids_no_url_can_name_are_refused_and_malformed_xml_stays_a_400(server, api):
    url = server.url
    for form_id in ("..", "x.svc", "x.xml", "tab&#9;id"):
        body = openrosa.XFORM.format(form_id=form_id, version="1").encode()
        refused = post(api, f"{url}/v1/projects/1/forms", data=body, headers={"Content-Type": XML})
        assert refused.status_code == 400 and refused.json()["code"] == 400.15, form_id
    broken = post(
        api,
        f"{url}/v1/projects/1/forms",
        data=b"<h:html><h:head><model><instance><data id='x'>",
        headers={"Content-Type": XML},
    )
    assert broken.status_code == 400 and broken.json()["code"] == 400.15


def test_hostile_form_ids_never_reach_a_file_path(server, api):
    """Blobs are named by their SHA-256: ``../x`` and ``a/b`` name no file or folder."""
    url = server.url
    for form_id in ("../../évasion", "a/../../b"):
        create_with_media(api, url, form_id)
    blobs = Path(server.tmp_path) / "blobs"  # type: ignore[attr-defined]
    names = [p.relative_to(blobs).parts for p in blobs.rglob("*")]
    assert names and all(
        re.fullmatch(r"[0-9a-f]{2}", parts[0])
        and (len(parts) < 2 or re.fullmatch(r"[0-9a-f]{2}", parts[1]))
        and (len(parts) < 3 or re.fullmatch(r"[0-9a-f]{64}", parts[2]))
        for parts in names
    ), names
    outside = [p.name for p in Path(server.tmp_path).parent.rglob("*") if "évasion" in p.name]  # type: ignore[attr-defined]
    assert outside == []


# ---- media missing at publish ----------------------------------------------------------------


def test_the_api_publishes_with_media_missing_as_central_and_collect_is_not_offered_them(
    server, api
):
    url = server.url
    form_id = "sans_media"
    base = f"{url}/v1/projects/1/forms/{form_id}"
    post(api, f"{url}/v1/projects/1/forms", data=xform(form_id), headers={"Content-Type": XML})
    published = post(api, f"{base}/draft/publish")
    assert published.status_code == 200 and published.json() == {"success": True}
    attachments = get(api, f"{base}/attachments").json()
    assert [(a["name"], a["exists"], a["hash"]) for a in attachments] == [
        ("villages.csv", False, None)
    ]
    listing = ElementTree.fromstring(get(api, f"{url}/v1/projects/1/formList").content)
    entry = next(
        x for x in listing.iter(f"{FORMLIST}xform") if x.findtext(f"{FORMLIST}formID") == form_id
    )
    manifest = ElementTree.fromstring(get(api, entry.findtext(f"{FORMLIST}manifestUrl")).content)
    assert list(manifest) == []  # as Central: no entry, so no bogus hash for Collect to fetch
    assert get(api, f"{base}/attachments/villages.csv").status_code == 404
    events = get(api, f"{url}/v1/audits", params={"action": "form.update.publish"}).json()
    mine = [e for e in events if e["xmlFormId"] == form_id]
    assert mine[0]["details"]["missingMedia"] == ["villages.csv"]
    # Created and published at once (?publish=true) works the same.
    at_once = post(
        api,
        f"{url}/v1/projects/1/forms?publish=true",
        data=xform("sans_media_2"),
        headers={"Content-Type": XML},
    )
    assert at_once.status_code == 200 and at_once.json()["publishedAt"] is not None


def test_the_console_shows_missing_files_and_publishes_only_once_confirmed(server, api, console):
    url = server.url
    form_id = "console/sans média"
    post(api, f"{url}/v1/projects/1/forms", data=xform(form_id), headers={"Content-Type": XML})
    page_url = f"{url}/projects/1/forms/{path_of(form_id)}"
    for language, words in (
        ("fr", ("1 fichier manque", "Publier sans le fichier manquant")),
        ("en", ("1 file is missing", "Publish without the missing file")),
    ):
        page = get(console, page_url, cookies={"lang": language})
        notice = re.search(r'id="missing-media" role="alert">(.*?)</div>', page.text, re.S)
        assert notice and "villages.csv" in notice[1] and words[0] in notice[1], language
        assert words[1] in page.text
    refused = post(console, f"{page_url}/draft/publish", data={"csrf_token": console.csrf})
    assert refused.status_code == 409
    assert "Joignez-les, ou cochez la case" in refused.text
    assert get(api, f"{url}/v1/projects/1/forms/{path_of(form_id)}").json()["publishedAt"] is None
    confirmed = post(
        console,
        f"{page_url}/draft/publish",
        data={"csrf_token": console.csrf, "missing_ok": "1"},
        allow_redirects=False,
    )
    assert confirmed.status_code == 303
    assert urlsplit(confirmed.headers["Location"]).path == f"/projects/1/forms/{path_of(form_id)}"
    after = get(api, f"{url}/v1/projects/1/forms/{path_of(form_id)}").json()
    assert after["publishedAt"] is not None
    # Published without them: the form's page keeps saying so, in both languages.
    for language, words in (
        ("fr", "Il manque 1 fichier à la version publiée"),
        ("en", "The published version lacks 1 file"),
    ):
        page = get(console, page_url, cookies={"lang": language})
        notice = re.search(
            r'id="published-missing-media" role="alert">(.*?)</div>', page.text, re.S
        )
        assert notice and words in notice[1] and "villages.csv" in notice[1], language


# ---- entity list names and the formID fallback -----------------------------------------------


def test_entity_list_names_follow_centrals_rule(server, api):
    url = f"{server.url}/v1/projects/1/datasets"
    for name in ("uuid:9f1c2e4b-6a3d-4e8f-9b2a-1c2d3e4f5a6b", "Élèves_2024", ":x-1", "_a"):
        created = post(api, url, json={"name": name})
        assert created.status_code == 200 and created.json()["name"] == name, created.text
        assert get(api, f"{url}/{quote(name, safe='')}").json()["name"] == name
        assert get(api, f"{url}/{quote(name, safe='')}.svc/Entities").status_code == 200
    for name in ("a.b", "__x", "1abc", "-a", "deux mots", "a/b", "x٣"):
        refused = post(api, url, json={"name": name})
        assert refused.status_code == 400 and refused.json()["code"] == 400.8, name
    props = f"{url}/_a/properties"
    for name, status in (("a.b", 200), ("région_2", 200), ("a:b", 400), ("Label", 400)):
        assert post(api, props, json={"name": name}).status_code == status, name


def test_the_form_id_fallback_header_names_the_form_on_creation_and_on_a_new_draft(server, api):
    url = server.url

    def send(path: str, version: str, fallback: str | None) -> requests.Response:
        headers = {"Content-Type": workbooks.XLSX_TYPE}
        if fallback is not None:
            headers["X-XlsForm-FormId-Fallback"] = quote(fallback, safe="")
        return post(api, url + path, data=workbooks.xlsx(no_id_form(version)), headers=headers)

    created = send("/v1/projects/1/forms?ignoreWarnings=true", "1", "Ménage pilote/2024")
    assert created.status_code == 200, created.text
    assert created.json()["xmlFormId"] == "Ménage pilote/2024"
    base = f"/v1/projects/1/forms/{path_of('Ménage pilote/2024')}"
    drafted = send(f"{base}/draft?ignoreWarnings=true", "2", "Ménage pilote/2024")
    assert drafted.status_code == 200 and drafted.json() == {"success": True}, drafted.text
    assert get(api, url + base + "/draft").json()["version"] == "2"
    without = send(f"{base}/draft?ignoreWarnings=true", "3", None)  # the form's own ID
    assert without.status_code == 200, without.text
    other = send(f"{base}/draft?ignoreWarnings=true", "4", "autre")
    assert other.status_code == 400 and other.json()["code"] == 400.8


def no_id_form(version: str) -> str:
    """A small XLSForm whose settings sheet names no form_id."""
    return f"""
| survey |
|        | type | name | label |
|        | text | nom  | Nom   |
| settings |
|          | version   | form_title     |
|          | {version} | Ménage pilote  |
"""
