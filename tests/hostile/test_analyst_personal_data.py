"""An analyst without the personal-data right reads every route that returns answers.

Issue 16, hole 2: fields marked ``pii`` were pseudonymised in the CSV, CSV zip and XLSX exports
only; an analyst read them in clear through OData, a record's XML and its versions' XML, the
console's record page, search, the overview's map, the media zip and the attachments. The
personal-data policy is now one module (server/personal.py) that every reader goes through;
this module walks EVERY GET route of the application that can be filled with the site's ids,
as the analyst (nothing planted may appear, not even inside zips) and as the coordinator (the
planted values do appear: the walk reaches the data), and checks that a new route is either
walked or declared free of answers.
"""

from __future__ import annotations

import ast
import gzip
import io
import itertools
import re
import uuid
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest

from server.app import create_app
from tests.support.site import (
    AUDIT_CSV,
    FORM_ID,
    PHOTO,
    PHOTO_NAME,
    PLANTED,
    household_record,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

# Routes with parameters the site cannot fill: none of them returns a record's answers.
ANSWER_FREE = {
    "api.get_user": "an account",
    "api.list_site_assignments": "who holds a site role",
    "api.list_form_assignments": "who may use a form",
    "api.list_project_assignments": "who holds a project role",
    "api.collect_settings": "a tablet's settings",
    "api.version_xml": "a published XForm (no record)",
    "api.list_version_fields": "a published version's fields",
    "api.get_entity": "an entity (entity lists are fed by the API only)",
    "api.list_entity_versions": "an entity's versions",
    "web.language": "the language switch",
    "web.app_user": "a tablet's page",
    "web.public_form": "a public link's empty form to fill (its token gives nothing else)",
}

# Values for the routes' parameters, several where one route serves several tables.
# ``version_id`` is a record version's instanceID on records, a form version elsewhere.


def _conflict_id(site) -> str:
    """The record sent again with another age (its planted answers unchanged): a conflict."""
    form = f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}"
    listed = site.api("manager").get(f"{form}/conflicts", timeout=30).json()
    if not listed:
        sent = site.submit(
            household_record(site.instance_id, age="35"),
            [(PHOTO_NAME, PHOTO, "image/jpeg"), ("audit.csv", AUDIT_CSV, "text/csv")],
        )
        assert sent.status_code == 409, sent.text
        listed = site.api("manager").get(f"{form}/conflicts", timeout=30).json()
    return str(listed[0]["id"])


def _values(site) -> dict[str, list[str]]:
    instance = quote(site.instance_id, safe="")
    return {
        "conflict_id": [_conflict_id(site)],
        "project_id": [str(site.project_id)],
        "xml_form_id": [FORM_ID],
        "instance_id": [instance],
        "version_id": [instance],
        "name": [PHOTO_NAME, "audit.csv"],
        "subpath": [
            "Submissions",
            quote(f"Submissions('{site.instance_id}')", safe="()'"),
            "Submissions.household",
            "Submissions.household.member",
            quote(f"Submissions('{site.instance_id}')/household", safe="()'/"),
        ],
    }


# Query strings tried on every route (exports read theirs; the others ignore them).
QUERIES = ["", "?clientAudit=true&attachments=true", "?$expand=*"]
CONSOLE_QUERIES = [
    "",
    *(f"?format={f}&clientAudit=true" for f in ("csv.zip", "csv", "xlsx", "geojson", "media.zip")),
    "?q=Planted",
    f"?version={quote('x')}",
]


def _urls(site) -> tuple[list[tuple[str, str]], set[str]]:
    """Return (endpoint, url) for every GET route the site can fill, and the endpoints seen."""
    app = create_app(
        {
            "DATABASE_URL": site.database_url,
            "DATA_DIR": str(site.data_dir),
            "SECRET_KEY": "walk",
            "ODK_VALIDATE": False,
        }
    )
    values = _values(site)
    urls: list[tuple[str, str]] = []
    endpoints: set[str] = set()
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()) or rule.endpoint in ("static", "web.static"):
            continue
        endpoints.add(rule.endpoint)
        arguments = sorted(rule.arguments - set(rule.defaults or {}))
        if any(a not in values for a in arguments):
            continue
        for combination in itertools.product(*(values[a] for a in arguments)):
            path = rule.rule
            for argument, value in zip(arguments, combination, strict=True):
                path = re.sub(rf"<(?:[^:<>]+:)?{argument}>", value, path)
            queries = CONSOLE_QUERIES if rule.endpoint.startswith("web.") else QUERIES
            urls.extend((rule.endpoint, site.url + path + query) for query in queries)
    return urls, endpoints


def _texts(body: bytes) -> list[bytes]:
    """Return the bytes to search: the body, and every entry of a zip (or a gzip) inside."""
    found = [body]
    if body[:2] == b"\x1f\x8b":
        found.append(gzip.decompress(body))
    if body[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            for name in archive.namelist():
                found.extend(_texts(archive.read(name)))
    return found


PLANTED_BYTES = [v.encode() for v in PLANTED.values()] + [
    v.encode("utf-8").replace(b"\xc3\xa9", b"\\u00e9") for v in PLANTED.values()
]


def _leaks(body: bytes) -> list[str]:
    leaks = []
    for text in _texts(body):
        leaks += [p.decode() for p in PLANTED_BYTES if p in text]
        if PHOTO in text:
            leaks.append("the personal photo")
        if AUDIT_CSV in text:
            leaks.append("the raw audit log")
    return leaks


def _client(site, who: str, endpoint: str):
    return site.console(who) if endpoint.startswith("web.") else site.api(who)


def test_every_route_that_returns_answers_hides_personal_data_from_an_analyst(site):
    urls, endpoints = _urls(site)
    unwalked = {e for e in endpoints if e not in {e for e, _ in urls}} - set(ANSWER_FREE)
    assert set(ANSWER_FREE) <= endpoints, set(ANSWER_FREE) - endpoints
    assert not unwalked, (
        "GET routes the walk cannot fill: give their parameters values in _values, or add "
        f"them to ANSWER_FREE saying why they return no answers: {sorted(unwalked)}"
    )
    leaked: dict[str, list[str]] = {}
    shown_to_coordinator: set[str] = set()
    for endpoint, url in urls:
        answer = _client(site, "viewer", endpoint).get(url, timeout=60)
        assert answer.status_code < 500, (url, answer.status_code, answer.text[:300])
        found = _leaks(answer.content)
        if found:
            leaked[url] = found
        coordinator = _client(site, "manager", endpoint).get(url, timeout=60)
        if _leaks(coordinator.content):
            shown_to_coordinator.add(endpoint)
    assert not leaked, f"personal data shown to an analyst: {leaked}"
    # The walk does reach the answers: a coordinator reads them in clear on these routes.
    for endpoint in (
        "api.submission_xml",
        "api.submission_version_xml",
        "api.odata_table",
        "api.download_attachment",
        "api.export_csv_zip",
        "web.submission",
        "web.submission_attachment",
        "web.export_download",
        "api.conflict_xml",
        "web.conflict",
    ):
        assert endpoint in shown_to_coordinator, endpoint


def test_an_analyst_reads_pseudonyms_where_the_answers_are_text(site):
    form = f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}"
    viewer = site.api("viewer")
    xml = viewer.get(f"{form}/submissions/{site.instance_id}.xml").text
    name = re.search(r"<name>([^<]*)</name>", xml).group(1)
    assert name.startswith("pid_")
    assert re.search(r"<photo\s*/>|<photo></photo>", xml), "a personal file is not named"
    assert "<age>34</age>" in xml, "what is not personal stays as it is"
    rows = viewer.get(f"{form}.svc/Submissions").json()["value"]
    assert rows[0]["respondent"]["name"] == name, "the same pseudonym in XML and OData"
    listed = viewer.get(f"{form}/submissions").json()
    assert listed[0]["instanceName"].startswith("pid_")
    csv = viewer.get(f"{form}/submissions.csv").text
    assert name in csv, "the same pseudonym as in the exports"
    coordinator = site.api("manager").get(f"{form}.svc/Submissions").json()["value"]
    assert coordinator[0]["respondent"]["name"] == PLANTED["name"]


def test_an_analyst_cannot_find_a_record_by_a_hidden_name(site):
    page = site.console("viewer").get(
        f"{site.url}/projects/{site.project_id}/forms/{FORM_ID}/submissions",
        params={"q": "Aminata"},
    )
    assert page.status_code == 200
    assert site.instance_id not in page.text
    found = site.console("manager").get(
        f"{site.url}/projects/{site.project_id}/forms/{FORM_ID}/submissions",
        params={"q": "Aminata"},
    )
    assert site.instance_id in found.text


def test_personal_files_are_refused_to_an_analyst(site):
    form = f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}"
    for name in (PHOTO_NAME, "audit.csv"):
        refused = site.api("viewer").get(
            f"{form}/submissions/{site.instance_id}/attachments/{name}",
            headers={"Accept-Language": "en"},
        )
        assert refused.status_code == 403, name
        assert "marked as personal data" in refused.json()["message"]

    shown = site.api("manager").get(
        f"{form}/submissions/{site.instance_id}/attachments/{PHOTO_NAME}"
    )
    assert shown.status_code == 200 and shown.content == PHOTO


def test_reading_personal_data_in_clear_is_audited(site):
    form = f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}"
    admin = site.api("admin")

    def events() -> list[dict]:
        return admin.get(f"{site.url}/v1/audits", params={"action": "submission.pii.read"}).json()

    # By id: the log is read a page (100) at a time, newest first, and the walk before this
    # test may have filled more than a page.
    before = max((e["id"] for e in events()), default=0)
    site.api("viewer").get(f"{form}/submissions/{site.instance_id}.xml").raise_for_status()
    assert [e for e in events() if e["id"] > before] == [], (
        "a pseudonymised read is not a read of personal data"
    )
    site.api("manager").get(f"{form}/submissions/{site.instance_id}.xml").raise_for_status()
    site.console("manager").get(
        f"{site.url}/projects/{site.project_id}/forms/{FORM_ID}/submissions/"
        + quote(site.instance_id, safe="")
    ).raise_for_status()
    latest = [e for e in events() if e["id"] > before]
    assert len(latest) == 2
    assert {e["details"]["channel"] for e in latest} == {"api.xml", "console"}
    for event in latest:
        assert event["actorId"] == site.actor_ids["manager"]
        assert event["details"]["instanceIds"] == [site.instance_id]


def test_only_the_personal_data_module_reads_raw_answers():
    """A new reader of answers cannot bypass the policy without being listed here.

    A record version's answers are named ``raw_xml``, ``raw_document`` and ``raw_instance_name``
    (their table columns ``xml``, ``document`` and ``instance_name``); a conflict's XML is
    ``xml`` in its table. Each module reading them is listed with what it does with them.
    """
    allowed = {
        "server/submissions/intake/decision.py": "a resend's receipt names the record kept",
        "server/submissions/services.py": "searches instance names when the disclosure allows",
        "server/submissions/overview.py": "hands documents and names to the disclosure",
        "server/exports/source.py": "the exports' rows, hidden by the export's plan",
        "server/exports/cleaning.py": "checks corrections; refuses personal columns",
        "server/crypto/decryptor.py": "opens encrypted envelopes for exports",
        "server/api/submissions.py": "hands XML, documents and names to the disclosure",
        "server/api/odata.py": "hands documents to the disclosure",
        "server/web/pages/submissions.py": "hands documents and names to the disclosure",
        "server/submissions/conflicts.py": "reads a conflict's payload to compare or take it",
        "server/api/conflicts.py": "hands both documents and the XML to the disclosure",
        "server/web/pages/conflicts.py": "hands both documents and the name to the disclosure",
        "server/entities/records.py": "reads a held or approved record's entity block",
    }
    raw = {"raw_xml", "raw_document", "raw_instance_name"}
    columns = {"xml", "document", "instance_name"}
    readers: dict[str, list[int]] = {}
    for path in sorted((ROOT / "server").rglob("*.py")):
        relative = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute):
                continue
            through_table = (
                node.attr in columns
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "c"
                and _names_a_record_table(node.value.value)
            )
            if node.attr in raw or through_table:
                readers.setdefault(relative, []).append(node.lineno)
    for template in (ROOT / "server/web/templates").rglob("*.html"):
        if re.search(r"\braw_(xml|document|instance_name)\b", template.read_text("utf-8")):
            readers.setdefault(str(template.relative_to(ROOT)), []).append(0)
    unexpected = {k: v for k, v in readers.items() if k not in allowed}
    assert not unexpected, (
        "these modules read raw answers: let them hand them to server/personal.py's "
        f"Disclosure, and list them here saying so: {unexpected}"
    )
    assert set(allowed) <= set(readers), set(allowed) - set(readers)


def _names_a_record_table(node: ast.expr) -> bool:
    """Tell whether ``node`` is the versions' or conflicts' table (``V``, ``VERSIONS``...)."""
    text = ast.unparse(node)
    return text in ("V", "VERSIONS", "CONFLICTS") or text.endswith(
        ("SubmissionVersion.__table__", "SubmissionConflict.__table__")
    )


def test_a_coordinator_who_writes_a_record_reads_it_back_audited(site):
    """The audit event is written beside a request that holds SQLite's write lock."""
    form = f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}"
    instance_id = f"uuid:{uuid.uuid4()}"
    created = site.api("manager").post(
        f"{form}/submissions",
        data=household_record(instance_id, name="Bintou Planted-Sow"),
        headers={"Content-Type": "application/xml"},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    assert created.json()["instanceName"] == "Bintou Planted-Sow"
    events = (
        site.api("admin")
        .get(f"{site.url}/v1/audits", params={"action": "submission.pii.read"})
        .json()
    )
    assert any(instance_id in e["details"]["instanceIds"] for e in events)
