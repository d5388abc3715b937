"""The OpenRosa protocol as ODK Collect reads it: form list, manifests, HEAD, Digest, drafts.

Named after the rules of openrosa.md; every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import re

import pytest
import sqlalchemy as sa
from lxml import etree

from server.submissions.models import Submission
from tests.support import factories
from tests.support.factories import PASSWORD
from tests.support.openrosa import (
    OPENROSA,
    VILLAGES_CSV,
    message_of,
    multipart,
    new_instance_id,
    publish_form,
    record,
)

LIST_NS = {"x": "http://openrosa.org/xforms/xformsList"}
MANIFEST_NS = {"m": "http://openrosa.org/xforms/xformsManifest"}


@pytest.fixture
def device(db_session):
    project = factories.project(db_session)
    app_user, token = factories.app_user(db_session, project.id)
    form = publish_form(db_session, project.id, app_user_ids=(app_user.actor_id,))
    return {
        "project": project,
        "app_user": app_user,
        "token": token,
        "form": form,
        "base": f"/v1/key/{token}/projects/{project.id}",
    }


def xforms(response):
    root = etree.fromstring(response.data)
    return [
        {child.tag.split("}")[1]: child.text for child in xform}
        for xform in root.findall("x:xform", LIST_NS)
    ]


def test_form_list_is_text_xml_with_openrosa_headers_and_no_cache(client, device):
    response = client.get(f"{device['base']}/formList?deviceID=collect%3Aabc", headers=OPENROSA)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert response.headers["X-OpenRosa-Version"] == "1.0"
    # The 100 MB body limit less room for Collect's multipart framing (protocol.MULTIPART_ROOM).
    assert response.headers["X-OpenRosa-Accept-Content-Length"] == "99895552"
    assert response.headers["Cache-Control"] == "no-cache"
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", response.headers["Date"])
    assert etree.fromstring(response.data).tag == "{http://openrosa.org/xforms/xformsList}xforms"


def test_form_list_entries_have_md5_hash_and_urls_that_keep_the_token(client, device):
    [entry] = xforms(client.get(f"{device['base']}/formList", headers=OPENROSA))
    assert entry["formID"] == "menage" and entry["name"] == "Enquête ménage"
    assert entry["version"] == "2024050701"
    assert re.fullmatch(r"md5:[0-9a-f]{32}", entry["hash"])
    prefix = f"http://localhost/v1/key/{device['token']}/projects/{device['project'].id}"
    assert entry["downloadUrl"] == f"{prefix}/forms/menage.xml"
    assert entry["manifestUrl"] == f"{prefix}/forms/menage/manifest"


def test_form_list_shows_only_open_forms_the_device_is_assigned_to(client, device, db_session):
    project_id, actor_id = device["project"].id, device["app_user"].actor_id
    publish_form(db_session, project_id, form_id="unassigned")
    publish_form(
        db_session, project_id, form_id="closing_form", state="closing", app_user_ids=(actor_id,)
    )
    publish_form(
        db_session, project_id, form_id="closed_form", state="closed", app_user_ids=(actor_id,)
    )
    publish_form(db_session, project_id, form_id="draft_only", draft=True, app_user_ids=(actor_id,))
    entries = xforms(client.get(f"{device['base']}/formList", headers=OPENROSA))
    assert [e["formID"] for e in entries] == ["menage"]


def test_form_list_honours_form_id_and_tolerates_a_trailing_slash(client, device, db_session):
    publish_form(
        db_session,
        device["project"].id,
        form_id="autre",
        app_user_ids=(device["app_user"].actor_id,),
    )
    everything = xforms(client.get(f"{device['base']}/formList/", headers=OPENROSA))
    assert {e["formID"] for e in everything} == {"menage", "autre"}
    one = xforms(client.get(f"{device['base']}/formList?formID=autre&listAllVersions=true"))
    assert [e["formID"] for e in one] == ["autre"]


def test_form_list_for_another_project_is_empty_for_a_device(client, device, db_session):
    other = factories.project(db_session, "Autre")
    publish_form(db_session, other.id, form_id="ailleurs")
    response = client.get(f"/v1/key/{device['token']}/projects/{other.id}/formList")
    assert response.status_code == 200
    assert xforms(response) == []


def test_manifest_lists_media_with_md5_and_token_urls(client, device):
    response = client.get(f"{device['base']}/forms/menage/manifest?deviceID=x")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert response.headers["X-OpenRosa-Version"] == "1.0"
    assert response.headers["Cache-Control"] == "no-cache"
    root = etree.fromstring(response.data)
    [media] = root.findall("m:mediaFile", MANIFEST_NS)
    assert media.findtext("m:filename", namespaces=MANIFEST_NS) == "villages.csv"
    assert media.findtext("m:hash", namespaces=MANIFEST_NS) == (
        "md5:" + hashlib.md5(VILLAGES_CSV).hexdigest()
    )
    assert media.findtext("m:downloadUrl", namespaces=MANIFEST_NS) == (
        f"http://localhost{device['base']}/forms/menage/attachments/villages.csv"
    )


def test_manifest_of_a_form_the_device_may_not_read_is_404(client, device, db_session):
    publish_form(db_session, device["project"].id, form_id="secret")
    assert client.get(f"{device['base']}/forms/secret/manifest").status_code == 404


def test_head_submission_is_204_never_200_with_the_upload_limit(client, device):
    response = client.head(f"{device['base']}/submission?deviceID=x", headers=OPENROSA)
    assert response.status_code == 204
    assert response.headers["X-OpenRosa-Version"] == "1.0"
    assert response.headers["X-OpenRosa-Accept-Content-Length"] == "99895552"
    assert client.head(f"{device['base']}/submission/").status_code == 204


def test_anonymous_head_is_401_with_a_digest_challenge(client, device):
    response = client.head(f"/v1/projects/{device['project'].id}/submission", headers=OPENROSA)
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Digest ")
    assert 'realm="merit-collect"' in challenge and 'qop="auth"' in challenge


def _digest(
    challenge: str, method: str, uri: str, email: str, password: str, nc: str = "00000001"
) -> str:
    """Answer a challenge as okhttp-digest does: the nth request with a nonce has nc=n."""
    params = dict(re.findall(r'(\w+)="?([^",]+)"?', challenge))
    ha1 = hashlib.md5(f"{email}:{params['realm']}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    cnonce = "deadbeefcafe"
    response = hashlib.md5(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (
        f'Digest username="{email}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
        f'uri="{uri}", response="{response}", qop=auth, nc={nc}, cnonce="{cnonce}", '
        f'opaque="{params["opaque"]}"'
    )


def test_a_web_user_goes_through_collects_digest_handshake(client, device, db_session):
    user = factories.user(
        db_session, "enqueteur@example.org", role="formfill", project_id=device["project"].id
    )
    assert user
    base = f"/v1/projects/{device['project'].id}"
    challenge = client.head(f"{base}/submission").headers["WWW-Authenticate"]
    uri = f"{base}/formList?deviceID=collect%3Aabc"
    listed = client.get(
        uri,
        headers={
            "Authorization": _digest(challenge, "GET", uri, "enqueteur@example.org", PASSWORD),
            **OPENROSA,
        },
    )
    assert listed.status_code == 200
    assert [e["formID"] for e in xforms(listed)] == ["menage"]
    assert xforms(listed)[0]["downloadUrl"] == f"http://localhost{base}/forms/menage.xml"
    uri = f"{base}/submission?deviceID=collect%3Aabc"
    iid = new_instance_id()
    sent = client.post(
        uri,
        data=multipart(record(iid, photo=None, audit=None)),
        headers={
            "Authorization": _digest(
                challenge, "POST", uri, "enqueteur@example.org", PASSWORD, nc="00000002"
            ),
            **OPENROSA,
        },
    )
    assert sent.status_code == 201
    submission = db_session.scalars(sa.select(Submission)).one()
    assert submission.submitter_id == user.actor_id


def test_a_wrong_digest_password_is_401_with_a_new_challenge(client, device, db_session):
    factories.user(
        db_session, "enqueteur@example.org", role="formfill", project_id=device["project"].id
    )
    base = f"/v1/projects/{device['project'].id}"
    challenge = client.head(f"{base}/submission").headers["WWW-Authenticate"]
    uri = f"{base}/formList"
    response = client.get(
        uri,
        headers={
            "Authorization": _digest(
                challenge, "GET", uri, "enqueteur@example.org", "wrong password"
            )
        },
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Digest ")
    assert message_of(response)


def test_a_draft_can_be_tried_on_a_tablet_with_its_test_token(client, device, db_session):
    publish_form(
        db_session, device["project"].id, form_id="brouillon", draft=True, draft_token="T" * 64
    )
    base = f"/v1/test/{'T' * 64}/projects/{device['project'].id}/forms/brouillon/draft"
    [entry] = xforms(client.get(f"{base}/formList"))
    assert entry["downloadUrl"] == f"http://localhost{base}.xml"
    assert entry["manifestUrl"] == f"http://localhost{base}/manifest"
    xform = client.get(f"{base}.xml")
    assert xform.status_code == 200
    assert entry["hash"] == "md5:" + hashlib.md5(xform.data).hexdigest()
    assert client.head(f"{base}/submission").status_code == 204
    sent = client.post(
        f"{base}/submission",
        data=multipart(record(new_instance_id(), form_id="brouillon", photo=None, audit=None)),
    )
    assert sent.status_code == 201
    submission = db_session.scalars(sa.select(Submission)).one()
    assert submission.draft


def test_a_wrong_draft_token_is_404_4(client, device, db_session):
    publish_form(
        db_session, device["project"].id, form_id="essai_x", draft=True, draft_token="T" * 64
    )
    response = client.get(
        f"/v1/test/{'W' * 64}/projects/{device['project'].id}/forms/essai_x/draft/formList"
    )
    assert response.status_code == 404
    assert "essai_x" not in message_of(response)
    assert "QR" in message_of(response)


def test_media_download_gives_the_bytes_whose_md5_the_manifest_announced(client, device):
    manifest = etree.fromstring(client.get(f"{device['base']}/forms/menage/manifest").data)
    media = manifest.find("m:mediaFile", MANIFEST_NS)
    url = media.findtext("m:downloadUrl", namespaces=MANIFEST_NS).replace("http://localhost", "")
    response = client.get(url + "?deviceID=collect%3Aabc")
    assert response.status_code == 200
    assert response.data == VILLAGES_CSV
    assert "md5:" + hashlib.md5(response.data).hexdigest() == media.findtext(
        "m:hash", namespaces=MANIFEST_NS
    )
    assert response.headers["Content-Type"].startswith("text/csv")
    assert response.headers["ETag"]
    again = client.get(url, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
