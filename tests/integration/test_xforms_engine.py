"""ODK's JavaScript form engine opens, fills and sends every form the server publishes.

ODK Web Forms (the browser entry of ODK Central) is built on ``@getodk/xforms-engine``; it reads
XForms more strictly than ODK Collect in places (a CSV whose column names are not XML names
stops it). For the programme forms and every form of the shared corpus, on a real server
(``merit serve`` with ODK Validate on, as in production) and over real HTTP:

1. publish it: the programme forms as ``make run`` does (``forms/`` on start), the corpus
   forms through the API, each referenced media file its authors did not ship replaced by a
   small stand-in (``tests/support/engine.py``); a corpus form that pyxform or ODK Validate
   refuses gets its 400 and is not published (the test checks that 400);
2. download forms and media as ODK Collect does (form list, md5 of the bytes, manifest);
3. fill every form in one Node process (``tests/engine/fill.mjs``): every question answered
   generically, two instances of each repeat, a small file for each upload; the payload is
   sent only if the engine calls it ready (a payload whose constraints fail never is);
4. post it as Collect posts (HEAD, then OpenRosa multipart with its files);
5. find every answer of the payload in the CSV export (every table of ``.csv.zip``).

Without Node.js 20.19+ the module is skipped with the reason, except under ``CI=true``, where
it fails. A corpus form that fails for a bug of the engine (not ours) is marked xfail in
``ENGINE_BUGS`` with the engine's exact error; none is today.
"""

from __future__ import annotations

import csv
import io
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from lxml import etree

from tests.conftest import IN_CI, SHARED
from tests.support import engine
from tests.support.collect import CollectClient
from tests.support.servers import ROOT, ServerProcess, server_env

pytestmark = pytest.mark.slow
ADMIN = ("admin@example.org", "un mot de passe de test assez long")
PROGRAMME = ("needs_assessment", "youth_survey")
CORPUS = SHARED / "corpus" / "xlsforms"
CORPUS_FILES = sorted(p.name for p in CORPUS.iterdir() if p.is_file()) if CORPUS.is_dir() else []
# file name -> why the engine, not this server, fails on it (with the engine's exact error).
ENGINE_BUGS: dict[str, str] = {}
CONTENT_TYPES = {
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".xlsm": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".xls": "application/vnd.ms-excel",
    ".csv": "text/csv",
}
LANGUAGES = ("Français (fr)", "English (en)")


@pytest.fixture(scope="session")
def engine_dir() -> Path:
    reason = engine.missing()
    if reason:
        if IN_CI:
            pytest.fail(reason + " (CI=true: the engine tests may not be skipped)")
        pytest.skip(reason)
    return engine.install()


@pytest.fixture(scope="module")
def server(module_database_url, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("engine-server")
    env = server_env(
        module_database_url,
        tmp_path,
        ADMIN_PASSWORD=ADMIN[1],
        FORMS_DIR=str(ROOT / "forms"),
        ODK_VALIDATE="true",
        WORKERS="2",
    )
    # Publishing forms/ with ODK Validate (Java) comes first: give the start more time.
    process = ServerProcess(env, log_path=tmp_path / "server.log").start(timeout=180)
    try:
        yield process
    finally:
        process.stop()


@dataclass
class Published:
    """What the server did with one corpus file: a published formID, or its refusal."""

    form_id: str | None = None
    problem: dict | None = None


@dataclass
class Site:
    url: str
    api: requests.Session
    tablet: CollectClient
    corpus: dict[str, Published] = field(default_factory=dict)
    filled: dict[str, engine.Filled] = field(default_factory=dict)

    def form_url(self, form_id: str) -> str:
        return f"{self.url}/v1/projects/1/forms/{quote(form_id, safe='')}"


def publish(api: requests.Session, url: str, path: Path) -> Published:
    """Upload a corpus XLSForm as a draft, give it its missing media, publish it."""
    created = api.post(
        f"{url}/v1/projects/1/forms?ignoreWarnings=true",
        data=path.read_bytes(),
        headers={
            "Content-Type": CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"),
            "Content-Disposition": f'attachment; filename="{path.name}"',
            "X-XlsForm-FormId-Fallback": path.stem,
        },
    )
    if created.status_code == 400:
        return Published(problem=created.json())
    assert created.status_code == 200, (path.name, created.status_code, created.text)
    form_id = created.json()["xmlFormId"]
    base = f"{url}/v1/projects/1/forms/{quote(form_id, safe='')}"
    xml = api.get(f"{base}/draft.xml").content
    for attachment in api.get(f"{base}/draft/attachments").json():
        if not attachment["exists"]:
            uploaded = api.post(
                f"{base}/draft/attachments/{quote(attachment['name'], safe='')}",
                data=engine.stand_in_media(xml, attachment["name"]),
            )
            assert uploaded.status_code == 200, (path.name, attachment, uploaded.text)
    published = api.post(f"{base}/draft/publish")
    assert published.status_code == 200, (path.name, published.status_code, published.text)
    return Published(form_id=form_id)


def login(url: str) -> requests.Session:
    api = requests.Session()
    token = api.post(f"{url}/v1/sessions", json={"email": ADMIN[0], "password": ADMIN[1]}).json()
    api.headers["Authorization"] = f"Bearer {token['token']}"
    return api


def open_site(server, api, engine_dir: Path, folder: Path, form_ids: list[str]) -> Site:
    """A tablet assigned ``form_ids`` downloads them as Collect does; the engine fills them."""
    started = time.monotonic()
    app_user = api.post(
        f"{server.url}/v1/projects/1/app-users", json={"displayName": f"Web Forms {folder.name}"}
    ).json()
    for form_id in form_ids:
        assigned = api.post(
            f"{server.url}/v1/projects/1/forms/{quote(form_id, safe='')}"
            f"/assignments/app-user/{app_user['id']}"
        )
        assert assigned.json() == {"success": True}, (form_id, assigned.text)
    settings = api.get(
        f"{server.url}/v1/projects/1/app-users/{app_user['id']}/collect-settings"
    ).json()["settings"]
    tablet = CollectClient(settings["general"]["server_url"], timeout=120)
    assert sorted(tablet.update_forms()) == sorted(form_ids)
    jobs = {}
    for number, (form_id, form) in enumerate(sorted(tablet.forms.items())):
        xml_path = folder / f"{number}.xml"
        xml_path.write_bytes(form.xml)
        media = folder / f"{number}-media"
        media.mkdir()
        for name, content in form.media.items():
            (media / name).write_bytes(content)
        jobs[form_id] = (xml_path, media)
    downloaded = time.monotonic()
    filled = engine.fill(engine_dir, jobs)
    print(
        f"\nengine: {len(jobs)} forms downloaded in {downloaded - started:.1f} s, filled by the "
        f"engine in {time.monotonic() - downloaded:.1f} s ("
        + ", ".join(f"{key[:24]} {value.ms} ms" for key, value in sorted(filled.items()))
        + ")"
    )
    return Site(server.url, api, tablet, filled=filled)


@pytest.fixture(scope="module")
def site(server, engine_dir, tmp_path_factory) -> Site:
    """The programme forms, published on start from forms/ as `make run` does."""
    api = login(server.url)
    return open_site(server, api, engine_dir, tmp_path_factory.mktemp("programme"), PROGRAMME)


@pytest.fixture(scope="module")
def corpus_site(server, engine_dir, tmp_path_factory) -> Site:
    """Every corpus file uploaded as a coordinator would; those published, filled."""
    started = time.monotonic()
    api = login(server.url)
    corpus = {name: publish(api, server.url, CORPUS / name) for name in CORPUS_FILES}
    print(
        f"\nengine: {len(corpus)} corpus files published or refused in "
        f"{time.monotonic() - started:.1f} s"
    )
    form_ids = [p.form_id for p in corpus.values() if p.form_id]
    site = open_site(server, api, engine_dir, tmp_path_factory.mktemp("corpus"), form_ids)
    site.corpus = corpus
    return site


# ---- checking a payload against the export ----------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def answers(xml: str) -> list[tuple[list[str], str]]:
    """Every answered leaf of a payload: its path below the root and its text."""
    root = etree.fromstring(xml.encode("utf-8"))
    found = []
    for element in root.iter():
        if not isinstance(element.tag, str) or len(element) or element is root:
            continue
        text = (element.text or "").strip()
        if not text:
            continue
        parts = [_local(e.tag) for e in reversed(list(element.iterancestors())) if e is not root]
        found.append(([*parts, _local(element.tag)], text))
    return found


def export_tables(site: Site, form_id: str) -> list[tuple[list[str], list[list[str]]]]:
    # The answers as sent: no leading ' before a calculated "-" (the default guards formulas).
    response = site.api.get(
        f"{site.form_url(form_id)}/submissions.csv.zip?attachments=false&escapeFormulas=false"
    )
    assert response.status_code == 200, response.text
    tables = []
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        for name in archive.namelist():
            if name.endswith(".csv"):
                rows = list(csv.reader(io.StringIO(archive.read(name).decode("utf-8-sig"))))
                tables.append((rows[0], rows[1:]))
    return tables


def missing_answers(xml: str, tables, instance_id: str) -> list[str]:
    """Answers of the payload that no row of the record shows in the column of their field."""

    def ours(headers: list[str], row: list[str]) -> bool:
        keyed = dict(zip(headers, row, strict=False))
        key = keyed.get("KEY", "") + " " + keyed.get("PARENT_KEY", "")
        return instance_id in key

    missing = []
    for parts, value in answers(xml):
        if parts == ["meta", "instanceID"]:
            continue
        name = parts[-1]
        seen = False
        for headers, rows in tables:
            for row in (r for r in rows if ours(headers, r)):
                for header, cell in zip(headers, row, strict=False):
                    if header != name and not header.endswith("-" + name):
                        continue
                    if cell == value:
                        seen = True
                if f"{name}-Latitude" in headers or any(
                    h.endswith(f"-{name}-Latitude") for h in headers
                ):
                    cells = [
                        c
                        for h, c in zip(headers, row, strict=False)
                        if h.endswith(f"{name}-Latitude") or h.endswith(f"{name}-Longitude")
                    ]
                    seen = seen or cells == value.split()[:2]
        if not seen:
            missing.append(f"{'/'.join(parts)} = {value!r}")
    return missing


def send_and_find(site: Site, form_id: str) -> engine.Filled:
    filled = site.filled[form_id]
    # Never post what the engine does not call ready (its constraints or requirements fail).
    assert filled.status == "ready", f"{form_id}: {filled.problem()}"
    assert filled.answered > 0 or not filled.unanswered, (form_id, filled.unanswered)
    responses = site.tablet.send(filled.xml.encode("utf-8"), filled.attachments)
    assert responses and responses[-1].status_code == 201, (form_id, responses[-1].text)
    root = etree.fromstring(filled.xml.encode("utf-8"))
    instance_id = root.findtext(".//{*}meta/{*}instanceID")
    assert instance_id, filled.xml[:500]
    missing = missing_answers(filled.xml, export_tables(site, form_id), instance_id)
    assert not missing, f"{form_id}: answers not in the CSV export: {missing[:10]}"
    return filled


# ---- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form_id", PROGRAMME)
def test_a_programme_form_filled_by_odk_web_forms_engine_reaches_the_export(site, form_id):
    filled = send_and_find(site, form_id)
    assert filled.languages == list(LANGUAGES)
    assert not filled.unanswered, filled.unanswered
    # The cascade, with its labels in French and English (choices, not a CSV).
    group = "site" if form_id == "needs_assessment" else "interview"
    for question in ("region", "cercle"):
        labels = filled.labels[f"/data/{group}/{question}"]
        assert set(labels) == set(LANGUAGES), labels
        assert all(names and all(names) for names in labels.values()), labels
    assert filled.labels[f"/data/{group}/region"][LANGUAGES[0]] == ["Kayes"]
    assert filled.labels[f"/data/{group}/cercle"][LANGUAGES[1]] == ["Bafoulabé"]
    if form_id == "needs_assessment":
        assert set(filled.attachments) == {"site_photo.jpg"}


def _corpus_params() -> list:
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=ENGINE_BUGS[name]))
        if name in ENGINE_BUGS
        else name
        for name in CORPUS_FILES
    ]


# The corpus (27 forms, some of 2 MB) runs against the production database only: compiling,
# validating and filling it is most of this module's time, and the database path it exercises
# is the programme forms' (which run on both).
@pytest.mark.parametrize("module_database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("name", _corpus_params())
def test_a_corpus_form_the_server_publishes_is_filled_sent_and_exported(corpus_site, name):
    site = corpus_site
    outcome = site.corpus[name]
    if outcome.problem is not None:
        # Not published: pyxform or ODK Validate refused it, with a message; nothing to open.
        assert outcome.problem["code"] == 400.15, outcome.problem
        assert outcome.problem["details"]["errors"][0]["message"].strip()
        return
    send_and_find(site, outcome.form_id)
