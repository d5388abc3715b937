"""A tablet's whole session against the server `make run` starts, over real HTTP.

The request sequence of openrosa.md with the programme's own forms: list, download (md5 of
the bytes served), manifest and media, HEAD, then a record with its photo in every order of
retries and split parts a bad network produces. Each record must end up stored once, with
its photo byte-identical.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import itertools
import uuid
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from lxml import etree

from server.db import create_engine
from tests.fixtures.forms import workbooks
from tests.support.collect import LIST_NS, MANIFEST_NS, CollectClient
from tests.support.servers import ROOT, ServerProcess, server_env

pytestmark = pytest.mark.slow
ADMIN = ("admin@example.org", "un mot de passe de test assez long")
# A 1×1 PNG: a form's image media.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def server(module_database_url, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("collect-session")
    env = server_env(
        module_database_url,
        tmp_path,
        ADMIN_PASSWORD=ADMIN[1],
        FORMS_DIR=str(ROOT / "forms"),
        WORKERS="2",
    )
    with ServerProcess(env, log_path=tmp_path / "server.log") as process:
        yield process


@pytest.fixture
def tablet(server):
    api = requests.Session()
    token = api.post(
        f"{server.url}/v1/sessions", json={"email": ADMIN[0], "password": ADMIN[1]}
    ).json()["token"]
    api.headers["Authorization"] = f"Bearer {token}"
    app_user = api.post(
        f"{server.url}/v1/projects/1/app-users", json={"displayName": "Tablette Ségou 1"}
    ).json()
    for form_id in ("needs_assessment", "youth_survey"):
        assigned = api.post(
            f"{server.url}/v1/projects/1/forms/{form_id}/assignments/app-user/{app_user['id']}"
        )
        assert assigned.json() == {"success": True}, assigned.text
    settings = api.get(
        f"{server.url}/v1/projects/1/app-users/{app_user['id']}/collect-settings"
    ).json()["settings"]
    client = CollectClient(settings["general"]["server_url"])
    client.app_user_id = app_user["id"]
    return client


def photo(seed: int) -> bytes:
    return b"\xff\xd8\xff\xe0" + hashlib.sha256(str(seed).encode()).digest() * 3000 + b"\xff\xd9"


def stored(database_url: str, instance_ids) -> list[tuple[str, int, int, str | None]]:
    engine = create_engine(database_url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT v.instance_id, v.attachments_expected, v.attachments_present, b.sha256 "
                "FROM submission_versions v JOIN submissions s ON s.id = v.submission_id "
                "LEFT JOIN submission_attachments a ON a.submission_version_id = v.id "
                "AND a.name = 'site.jpg' LEFT JOIN blobs b ON b.id = a.blob_id "
                "ORDER BY v.id"
            )
        ).all()
    rows = [r for r in rows if r[0] in instance_ids]
    engine.dispose()
    return [tuple(r) for r in rows]


def test_the_tablet_downloads_the_programme_forms_with_matching_hashes(tablet):
    assert sorted(tablet.update_forms()) == ["needs_assessment", "youth_survey"]
    needs = tablet.forms["needs_assessment"]
    # The region and cercle lists are choices in the XForm itself (xlsforms/reference).
    assert needs.media == {}
    assert "<value>Ségou</value>" in needs.xml.decode("utf-8")
    assert tablet.update_forms() == []  # nothing changed: nothing downloaded again


# Orders in which the two parts of a split record reach the server, with losses and repeats:
# (part index, response lost) — a lost response makes the tablet send everything again.
ORDERS = [
    [(0, False), (1, False)],
    [(0, True), (0, False), (1, False)],
    [(0, False), (1, True), (0, False), (1, False)],
    [(1, False), (0, False)],
    [(0, False), (0, False), (1, True), (1, False)],
]


def test_a_record_arrives_once_with_its_photo_whatever_the_order_of_retries(
    tablet, module_database_url
):
    tablet.update_forms()
    sent = {}
    for number, order in enumerate(ORDERS):
        instance_id = f"uuid:{uuid.uuid4()}"
        image = photo(number)
        xml = tablet.new_record(
            "needs_assessment",
            {
                "consent_section/enumerator_code": "E07",
                "consent_section/consent": "yes",
                "site/site_type": "prison",
                "site/region": "ML04",
                "site/cercle": "ML0405",
                "site/site_photo": "site.jpg",
                "meta/audit": "audit.csv",
            },
            instance_id=instance_id,
        )
        files = {"site.jpg": image, "audit.csv": b"event,node,start,end\nform start,,1,\n"}
        status, _ = tablet.preflight()
        assert status == 204
        parts = [{"site.jpg": image}, {"audit.csv": files["audit.csv"]}]
        for index, _lost in order:
            response = tablet.post(xml, parts[index], incomplete=index == 0)
            assert response.status_code == 201, response.text
            assert "<OpenRosaResponse" in response.text
        sent[instance_id] = hashlib.sha256(image).hexdigest()
    rows = stored(module_database_url, set(sent))
    assert [r[0] for r in rows] == list(sent)  # each record once, in arrival order
    for instance_id, expected, present, sha in rows:
        assert (expected, present) == (2, 2)
        assert sha == sent[instance_id]


def test_a_split_record_at_the_advertised_size_is_complete(tablet):
    tablet.update_forms()
    xml = tablet.new_record("youth_survey", {"meta/audit": "audit.csv"})
    answers = tablet.send(xml, {"audit.csv": b"event\n"})
    assert [a.status_code for a in answers] == [201]
    plan = tablet.plan(xml, {f"p{i}.jpg": b"x" * 400 for i in range(5)}, split=len(xml) + 900)
    assert [sorted(p) for p in plan] == [["p0.jpg", "p1.jpg"], ["p2.jpg", "p3.jpg"], ["p4.jpg"]]
    assert list(itertools.chain.from_iterable(plan)) == [f"p{i}.jpg" for i in range(5)]


def test_the_server_answers_collects_first_requests_without_credentials_correctly(server):
    head = requests.head(f"{server.url}/v1/projects/1/submission", timeout=10)
    assert head.status_code == 401 and head.headers["WWW-Authenticate"].startswith("Digest")
    bad = requests.get(f"{server.url}/v1/key/{'x' * 64}/projects/1/formList", timeout=10)
    assert bad.status_code == 403
    assert Path(ROOT / "forms" / "needs_assessment.xml").exists()


def raw_get(url: str, **headers: str) -> requests.Response:
    """GET as OkHttp does for Collect (``Accept-Encoding: gzip``); the body left as it came."""
    response = requests.get(
        url,
        headers={"X-OpenRosa-Version": "1.0", "Accept-Encoding": "gzip", **headers},
        stream=True,
        timeout=30,
    )
    response.wire = response.raw.read(decode_content=False)  # type: ignore[attr-defined]
    return response


def _publish_with_media(server_url: str, app_user_id: int) -> bytes:
    """Publish the household form with its media (a CSV of villages over a kilobyte)."""
    api = requests.Session()
    token = api.post(
        f"{server_url}/v1/sessions", json={"email": ADMIN[0], "password": ADMIN[1]}
    ).json()["token"]
    api.headers["Authorization"] = f"Bearer {token}"
    created = api.post(
        f"{server_url}/v1/projects/1/forms",
        data=workbooks.xlsx(workbooks.text("household.md")),
        headers={
            "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "X-XlsForm-FormId-Fallback": "household",
        },
    )
    assert created.status_code == 200, created.text
    villages = "name,label\n" + "".join(f"v{n},Village numéro {n}\n" for n in range(200))
    media = {"villages.csv": villages.encode(), "besoins.png": PNG, "needs.png": PNG}
    for name, content in media.items():
        attached = api.post(
            f"{server_url}/v1/projects/1/forms/household/draft/attachments/{name}", data=content
        )
        assert attached.status_code == 200, attached.text
    assert api.post(f"{server_url}/v1/projects/1/forms/household/draft/publish").ok
    assigned = api.post(
        f"{server_url}/v1/projects/1/forms/household/assignments/app-user/{app_user_id}"
    )
    assert assigned.json() == {"success": True}, assigned.text
    return media["villages.csv"]


def test_what_the_tablet_downloads_travels_gzipped_with_its_openrosa_headers(server, tablet):
    villages = _publish_with_media(server.url, tablet.app_user_id)
    listed = raw_get(f"{tablet.server_url}/formList")
    assert listed.status_code == 200
    assert listed.headers["Content-Encoding"] == "gzip"
    assert listed.headers["X-OpenRosa-Version"] == "1.0"
    assert "Accept-Encoding" in listed.headers["Vary"]
    assert "text/xml" in listed.headers["Content-Type"]
    entries = {
        child.findtext(f"{{{LIST_NS}}}formID"): child
        for child in etree.fromstring(gzip.decompress(listed.wire)).findall(f"{{{LIST_NS}}}xform")
    }
    needs = entries["needs_assessment"]
    xform = raw_get(needs.findtext(f"{{{LIST_NS}}}downloadUrl"))
    assert xform.headers["Content-Encoding"] == "gzip"
    assert xform.headers["X-OpenRosa-Version"] == "1.0"
    assert int(xform.headers["Content-Length"]) == len(xform.wire)
    plain = gzip.decompress(xform.wire)
    assert len(xform.wire) < len(plain) / 5
    # Collect hashes the bytes after HTTP decompression: they are the listed hash.
    listed_hash = needs.findtext(f"{{{LIST_NS}}}hash").removeprefix("md5:")
    assert hashlib.md5(plain).hexdigest() == listed_hash
    household = entries["household"]
    manifest = raw_get(household.findtext(f"{{{LIST_NS}}}manifestUrl"))
    assert manifest.headers["X-OpenRosa-Version"] == "1.0"
    files = {
        item.findtext(f"{{{MANIFEST_NS}}}filename"): item
        for item in etree.fromstring(
            gzip.decompress(manifest.wire)
            if manifest.headers.get("Content-Encoding") == "gzip"
            else manifest.wire
        ).findall(f"{{{MANIFEST_NS}}}mediaFile")
    }
    assert set(files) == {"villages.csv", "besoins.png", "needs.png"}
    png = raw_get(files["needs.png"].findtext(f"{{{MANIFEST_NS}}}downloadUrl"))
    assert "Content-Encoding" not in png.headers and png.wire == PNG  # images travel as they are
    cercles_url = files["villages.csv"].findtext(f"{{{MANIFEST_NS}}}downloadUrl")
    cercles = raw_get(cercles_url)
    assert cercles.headers["Content-Encoding"] == "gzip"
    assert cercles.headers["ETag"].startswith('W/"')
    assert "Accept-Ranges" not in cercles.headers
    content = gzip.decompress(cercles.wire)
    assert content == villages
    assert hashlib.md5(content).hexdigest() == files["villages.csv"].findtext(
        f"{{{MANIFEST_NS}}}hash"
    ).removeprefix("md5:")
    # The gzip variant's tag revalidates it: 304, the same weak tag.
    again = raw_get(cercles_url, **{"If-None-Match": cercles.headers["ETag"]})
    assert again.status_code == 304 and again.headers["ETag"] == cercles.headers["ETag"]
    # A resumed download asks for a range: it gets the plain bytes of that range.
    resumed = raw_get(cercles_url, Range="bytes=10-29")
    assert resumed.status_code == 206
    assert "Content-Encoding" not in resumed.headers
    assert resumed.wire == content[10:30]
    assert resumed.headers["Content-Range"] == f"bytes 10-29/{len(content)}"
    # The preflight stays what Collect expects.
    head = requests.head(
        f"{tablet.server_url}/submission",
        headers={"X-OpenRosa-Version": "1.0", "Accept-Encoding": "gzip"},
        timeout=10,
    )
    assert head.status_code == 204 and head.headers["X-OpenRosa-Accept-Content-Length"]


def test_a_tablet_follows_a_participant_with_the_entity_list_over_http(server):
    """The follow-up forms as Collect uses them: the list's hash is the MD5 of what it gets."""
    api = requests.Session()
    token = api.post(
        f"{server.url}/v1/sessions", json={"email": ADMIN[0], "password": ADMIN[1]}
    ).json()["token"]
    api.headers["Authorization"] = f"Bearer {token}"
    app_user = api.post(
        f"{server.url}/v1/projects/1/app-users", json={"displayName": "Tablette suivi"}
    ).json()
    for form_id in ("participant_intake", "risk_review"):
        assigned = api.post(
            f"{server.url}/v1/projects/1/forms/{form_id}/assignments/app-user/{app_user['id']}"
        )
        assert assigned.json() == {"success": True}, assigned.text
    settings = api.get(
        f"{server.url}/v1/projects/1/app-users/{app_user['id']}/collect-settings"
    ).json()["settings"]
    tablet = CollectClient(settings["general"]["server_url"])
    # CollectClient checks every manifest hash against the MD5 of the bytes it receives.
    assert sorted(tablet.update_forms()) == ["participant_intake", "risk_review"]
    before = tablet.forms["risk_review"].media["participants.csv"]
    entity_id, code = str(uuid.uuid4()), f"SEG-{uuid.uuid4().int % 10_000:04d}"
    intake = (
        '<?xml version="1.0"?><data xmlns:jr="http://openrosa.org/javarosa" '
        'xmlns:orx="http://openrosa.org/xforms" id="participant_intake" version="2026120801">'
        f"<today>2026-03-01</today><identification><participant_code>{code}</participant_code>"
        "<full_name>Awa Traoré</full_name><sex>female</sex><age_group>age_18_24</age_group>"
        "<site>segou_prison</site><entry_date>2026-02-20</entry_date></identification>"
        "<initial_status>new</initial_status>"
        f'<meta><entity dataset="participants" create="1" id="{entity_id}">'
        f"<label>{code}</label></entity><instanceID>uuid:{uuid.uuid4()}</instanceID></meta></data>"
    ).encode()
    assert [r.status_code for r in tablet.send(intake, {})] == [201]
    (manifest_url,) = [e["manifestUrl"] for e in tablet.form_list() if e["formID"] == "risk_review"]
    after = tablet._media(manifest_url)["participants.csv"]
    assert after != before and f"{entity_id},{code},1,1,,{code},female".encode() in after
    assert b"Traor" not in after  # the name never reaches a tablet
    assert tablet._media(manifest_url)["participants.csv"] == after
