"""A public link's token fills its one form and does nothing else (issue 18, item 4).

Whoever holds a public link (it is meant to be passed around: an office, a partner) gets the
form's page, ``/-/<token>``, and through ``/v1/key/<token>/...`` the form, its media and the
submission route. With it they try everything else a token could open: the records they or
others sent (list, XML, OData, exports, attachments), another form of the project, the
project, the console, other ways to present the token (Bearer, Basic, a cookie), giving the
link another role, and overwriting an existing record by naming it in ``deprecatedID``. A
revoked link opens nothing, at once. Against a real server (gunicorn) on each database.
"""

from __future__ import annotations

import base64
import uuid

import pytest
import requests

from tests.support.site import FORM_ID, PHOTO, PHOTO_NAME, Site, household_record

pytestmark = pytest.mark.slow

OPENROSA = {"X-OpenRosa-Version": "1.0"}


def _link(site: Site, name: str, form_id: str = FORM_ID) -> dict:
    answer = site.api("manager").post(
        f"{site.url}/v1/projects/{site.project_id}/forms/{form_id}/public-links",
        json={"displayName": name},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _send(base: str, xml: bytes) -> requests.Response:
    return requests.post(
        f"{base}/submission",
        files=[
            ("xml_submission_file", ("record.xml", xml, "text/xml")),
            (PHOTO_NAME, (PHOTO_NAME, PHOTO, "image/jpeg")),
        ],
        headers=OPENROSA,
        timeout=60,
    )


def test_a_link_fills_its_form_and_reads_nothing_back(site: Site) -> None:
    link = _link(site, "Saisie au bureau")
    token, p = link["token"], site.project_id
    base = f"{site.url}/v1/key/{token}/projects/{p}"
    form = f"{base}/forms/{FORM_ID}"

    # What the page needs: the page, the form, its media, the submission route.
    page = requests.get(f"{site.url}/-/{token}", timeout=30)
    assert page.status_code == 200 and 'id="odk-web-form"' in page.text
    assert requests.get(f"{form}.xml", timeout=30).status_code == 200
    assert requests.get(f"{form}/attachments/villages.csv", timeout=30).status_code == 200
    mine = f"uuid:{uuid.uuid4()}"
    assert _send(base, household_record(mine)).status_code == 201

    # Nothing it sent, nor anything else of the project, comes back.
    for path in (
        f"{form}/submissions",
        f"{form}/submissions/{mine}",
        f"{form}/submissions/{mine}.xml",
        f"{form}/submissions/{mine}/attachments",
        f"{form}/submissions/{mine}/attachments/{PHOTO_NAME}",
        f"{form}/submissions/{site.instance_id}.xml",
        f"{form}.svc/Submissions",
        f"{form}/submissions.csv.zip",
        f"{form}/submissions.csv",
        f"{form}/draft",
        f"{form}/public-links",
        f"{form}/assignments",
        f"{base}/forms",
        f"{base}",
        f"{base}/app-users",
        f"{base}/datasets",
        f"{site.url}/v1/key/{token}/projects/{site.other_project_id}/forms",
        f"{site.url}/v1/key/{token}/users",
        f"{site.url}/v1/key/{token}/audits",
    ):
        answer = requests.get(path, timeout=30)
        assert answer.status_code in (403, 404), (path, answer.status_code, answer.text[:200])
        assert b"Awa" not in answer.content, path
    assert requests.get(f"{base}/formList", timeout=30).text.count("<xform>") == 1
    assert requests.get(f"{site.url}/v1/key/{token}/projects", timeout=30).json() == []

    # The token is a path token only: as a bearer token, as Basic, it is nobody.
    for header in (
        f"Bearer {token}",
        "Basic " + base64.b64encode(f"{token}:{token}".encode()).decode(),
    ):
        answer = requests.get(
            f"{site.url}/v1/projects/{p}/forms/{FORM_ID}.xml",
            headers={"Authorization": header},
            timeout=30,
        )
        assert answer.status_code in (401, 403), header
    # Console pages do not open with it: the prefix is taken off /v1 paths only.
    console = requests.get(
        f"{site.url}/v1/key/{token}/../../projects/{p}", timeout=30, allow_redirects=False
    )
    assert console.status_code in (303, 401, 403, 404)
    assert (
        requests.get(
            f"{site.url}/projects/{p}",
            cookies={"merit_session": token},
            timeout=30,
            allow_redirects=False,
        ).status_code
        == 303
    )


def test_a_link_cannot_overwrite_a_record_nor_gain_a_role(site: Site) -> None:
    link = _link(site, "Partenaire")
    base = f"{site.url}/v1/key/{link['token']}/projects/{site.project_id}"
    before = site.count("submission_versions")
    # An "edit" of the tablet's record, naming it as the version it replaces: refused.
    forged = household_record(f"uuid:{uuid.uuid4()}", name="Faux").replace(
        b"</instanceName>",
        f"</instanceName><deprecatedID>{site.instance_id}</deprecatedID>".encode(),
    )
    assert _send(base, forged).status_code == 403
    assert site.count("submission_versions") == before
    # A coordinator cannot make a link more than a link either (its token would carry it).
    for role in ("manager", "viewer", "formfill"):
        answer = site.api("manager").post(
            f"{site.url}/v1/projects/{site.project_id}/assignments/{role}/{link['id']}",
            timeout=30,
        )
        assert answer.status_code == 404, (role, answer.text)
    assert requests.get(f"{base}/forms/{FORM_ID}/submissions", timeout=30).status_code == 404


def test_a_revoked_link_opens_nothing_at_once(site: Site) -> None:
    link = _link(site, "À révoquer")
    token = link["token"]
    base = f"{site.url}/v1/key/{token}/projects/{site.project_id}"
    assert requests.get(f"{base}/forms/{FORM_ID}.xml", timeout=30).status_code == 200
    gone = site.api("manager").delete(
        f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}/public-links/{link['id']}",
        timeout=30,
    )
    assert gone.status_code == 200
    assert requests.get(f"{base}/forms/{FORM_ID}.xml", timeout=30).status_code == 403
    assert _send(base, household_record()).status_code == 403
    assert requests.get(f"{site.url}/-/{token}", timeout=30).status_code == 404
    audit = site.api("admin").get(f"{site.url}/v1/audits", timeout=30).json()
    actions = [event["action"] for event in audit]
    assert "public_link.create" in actions and "public_link.delete" in actions
