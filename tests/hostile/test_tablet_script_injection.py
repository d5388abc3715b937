"""A tablet's token must not become a coordinator's power through a record (issue 16, hole 1).

The attack: the tablet sends a "record" that is a web page (an XHTML ``<html>`` root holding a
``<script>``). Stored, its XML is served on the console's origin; a coordinator who opens it
runs the script with their session (it reads a CSRF token from a console page and creates an
app user through ``/v1``). Two walls, each tested here:

* intake refuses a record that is not the form's instance (its root must be the form's
  primary-instance root, in no namespace or the XForms one; encrypted envelopes keep theirs),
  and any record holding elements a browser would run (XHTML, SVG, MathML, XSLT) or a style
  sheet instruction: 400 in OpenRosa XML for Collect, in JSON for ``/v1``, nothing stored;
* whatever a client uploaded is served with ``X-Content-Type-Options: nosniff`` and
  ``Content-Security-Policy: default-src 'none'; sandbox`` (no script, no fetch, an opaque
  origin), set for every response of the application in one place (``server.web.security``);
  the walk of every GET route is in ``test_tablet_served_content.py``.
"""

from __future__ import annotations

import uuid

import pytest

from tests.support.site import FORM_ID, FORM_VERSION, household_record

pytestmark = pytest.mark.slow

SANDBOX = "default-src 'none'; sandbox"
XHTML = "http://www.w3.org/1999/xhtml"
TABLES = ("submissions", "submission_versions", "submission_attachments", "submission_conflicts")

# What the reproduction sent: a page that, opened by a signed-in coordinator, reads a
# CSRF token from a console page and creates an app user with it.
SCRIPT = (
    'fetch(\'/\').then(r=>r.text()).then(t=>{const c=t.match(/csrf_token" value="([^"]+)/)[1];'
    "const b=new URLSearchParams({csrf_token:c,name:'pwned'});"
    "fetch('/projects/1/app-users',{method:'POST',body:b});});"
)


def _meta(instance_id: str, deprecated_id: str | None = None) -> str:
    deprecated = f"<deprecatedID>{deprecated_id}</deprecatedID>" if deprecated_id else ""
    return f"<meta><instanceID>{instance_id}</instanceID>{deprecated}</meta>"


def _identity() -> str:
    return f'id="{FORM_ID}" version="{FORM_VERSION}"'


def hostile_records(instance_id: str, deprecated_id: str | None = None) -> dict[str, bytes]:
    """Records a browser would run, each with the form's formID and version."""
    meta = _meta(instance_id, deprecated_id)
    identity = _identity()
    envelope = (
        "<base64EncryptedKey>Qk9PTQ==</base64EncryptedKey>"
        "<encryptedXmlFile>submission.xml.enc</encryptedXmlFile>"
    )
    shapes = {
        # The record: an XHTML page with the form's id.
        "xhtml_page": f'<html xmlns="{XHTML}" {identity}><script>{SCRIPT}</script>{meta}</html>',
        # The form's root name, but in the XHTML namespace: a browser runs its <script>.
        "form_root_in_xhtml": f'<data xmlns="{XHTML}" {identity}><script>{SCRIPT}</script>'
        f"{meta}</data>",
        "svg_image": f'<svg xmlns="http://www.w3.org/2000/svg" {identity}>'
        f"<script>{SCRIPT}</script>{meta}</svg>",
        # A root that is not the form's, even in no namespace.
        "another_root": f"<html {identity}><age>34</age>{meta}</html>",
        # The form's instance, with one XHTML element inside it: a browser runs it too.
        "script_inside_the_instance": f'<data {identity} xmlns:h="{XHTML}"><age>34</age>'
        f"<h:script>{SCRIPT}</h:script>{meta}</data>",
        # A style sheet (XSLT) a browser applies to the record before showing it.
        "style_sheet": '<?xml-stylesheet type="text/xsl" href="data:text/xml,x"?>'
        f"<data {identity}><age>34</age>{meta}</data>",
        # Claiming to be an encrypted envelope does not make a page acceptable.
        "page_claiming_encryption": f'<html xmlns="{XHTML}" {identity} encrypted="yes">'
        f"<script>{SCRIPT}</script>{envelope}{meta}</html>",
    }
    return {name: ('<?xml version="1.0"?>' + xml).encode() for name, xml in shapes.items()}


SHAPES = sorted(hostile_records("uuid:x"))


def _counts(site) -> dict[str, int]:
    return {table: site.count(table) for table in TABLES}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_tablet_cannot_send_a_web_page_as_a_record(site, shape):
    before = _counts(site)
    xml = hostile_records(f"uuid:{uuid.uuid4()}")[shape]
    answer = site.submit(xml)
    assert answer.status_code == 400, answer.text
    # Collect shows the first <message> of an OpenRosa response, in French (it sends no
    # Accept-Language).
    assert answer.headers["Content-Type"].startswith("text/xml")
    assert "<OpenRosaResponse" in answer.text
    assert "n’est pas une fiche du formulaire household" in answer.text, answer.text
    assert _counts(site) == before


@pytest.mark.parametrize("shape", SHAPES)
def test_the_api_cannot_create_a_web_page_as_a_record(site, shape):
    before = _counts(site)
    url = f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}/submissions"
    said = {"en": "is not a record of form household", "fr": "n’est pas une fiche du formulaire"}
    for language, words in said.items():
        xml = hostile_records(f"uuid:{uuid.uuid4()}")[shape]
        answer = site.api("manager").post(
            url,
            data=xml,
            headers={"Content-Type": "application/xml", "Accept-Language": language},
            timeout=30,
        )
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert str(body["code"]).startswith("400."), body
        assert words in body["message"], body
    assert _counts(site) == before


@pytest.mark.parametrize("shape", SHAPES)
def test_the_api_cannot_edit_a_record_into_a_web_page(site, shape):
    before = _counts(site)
    url = f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}/submissions"
    versions = site.api("manager").get(f"{url}/{site.instance_id}/versions", timeout=30).json()
    current = next(version["instanceId"] for version in versions if version["current"])
    xml = hostile_records(f"uuid:{uuid.uuid4()}", deprecated_id=current)[shape]
    answer = site.api("manager").put(
        f"{url}/{site.instance_id}",
        data=xml,
        headers={"Content-Type": "application/xml", "Accept-Language": "en"},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert "message" in answer.json()
    assert _counts(site) == before


def test_the_forms_instance_in_the_xforms_namespace_is_still_a_record(site):
    # ODK Web Forms (and JavaRosa serialising a namespaced instance) write the XForms namespace.
    instance_id = f"uuid:{uuid.uuid4()}"
    xml = household_record(instance_id).replace(
        b"<data ", b'<data xmlns="http://www.w3.org/2002/xforms" ', 1
    )
    assert b'xmlns="http://www.w3.org/2002/xforms"' in xml
    answer = site.submit(xml)
    assert answer.status_code == 201, answer.text


def _served_sandboxed(answer) -> None:
    assert answer.status_code == 200, answer.text
    assert answer.headers.get("X-Content-Type-Options") == "nosniff", dict(answer.headers)
    assert answer.headers.get("Content-Security-Policy") == SANDBOX, dict(answer.headers)


def test_a_records_xml_and_its_versions_xml_are_served_sandboxed(site):
    manager = site.api("manager")
    records = f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}/submissions"
    _served_sandboxed(manager.get(f"{records}/{site.instance_id}.xml", timeout=30))
    versions = manager.get(f"{records}/{site.instance_id}/versions", timeout=30).json()
    assert versions
    for version in versions:
        served = manager.get(
            f"{records}/{site.instance_id}/versions/{version['instanceId']}.xml", timeout=30
        )
        _served_sandboxed(served)
    # Through the console's session too (what the coordinator's browser sends).
    console = site.console("manager")
    _served_sandboxed(console.get(f"{records}/{site.instance_id}.xml", timeout=30))


def test_a_forms_xml_and_files_are_served_sandboxed(site):
    manager = site.api("manager")
    form = f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}"
    _served_sandboxed(manager.get(f"{form}.xml", timeout=30))
    _served_sandboxed(manager.get(f"{form}/versions/{FORM_VERSION}.xml", timeout=30))
    _served_sandboxed(manager.get(f"{form}.xlsx", timeout=30))
    # What ODK Collect downloads with the tablet's token: the form and its media.
    tablet = f"{site.tablet_base}/forms/{FORM_ID}"
    headers = {"X-OpenRosa-Version": "1.0"}
    _served_sandboxed(site.api("anonymous").get(f"{tablet}.xml", headers=headers, timeout=30))
    media = site.api("anonymous").get(
        f"{tablet}/attachments/villages.csv", headers=headers, timeout=30
    )
    _served_sandboxed(media)
    assert media.content, "the tablet gets the media's bytes, sandboxed"


def test_the_end_to_end_attack_is_refused_and_the_xml_is_sandboxed(site):
    """The issue's reproduction, step by step: send the page, then open what was stored."""
    before = _counts(site)
    instance_id = f"uuid:{uuid.uuid4()}"
    sent = site.submit(hostile_records(instance_id)["xhtml_page"])
    assert 400 <= sent.status_code < 500, sent.text
    assert _counts(site) == before
    records = f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}/submissions"
    console = site.console("manager")
    assert console.get(f"{records}/{instance_id}.xml", timeout=30).status_code == 404
    app_users = site.api("manager").get(
        f"{site.url}/v1/projects/{site.project_id}/app-users", timeout=30
    )
    assert "pwned" not in app_users.text
    # The record that was accepted is served so that no browser runs anything in it.
    _served_sandboxed(console.get(f"{records}/{site.instance_id}.xml", timeout=30))
