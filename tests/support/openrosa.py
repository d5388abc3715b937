"""What ODK Collect sends: a small published form, records built like Collect builds them,
multipart bodies, and the Digest handshake."""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from xml.sax.saxutils import escape

from sqlalchemy.orm import Session

from server.auth import services as accounts
from server.db import utcnow
from server.forms.models import Form, FormAttachment, FormVersion
from server.storage import services as storage

FORM_ID = "menage"
VERSION = "2024050701"

XFORM = """<?xml version="1.0"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" \
xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms" \
xmlns:odk="http://www.opendatakit.org/xforms">
  <h:head>
    <h:title>Enquête ménage</h:title>
    <model odk:xforms-version="1.0.0">
      <instance>
        <data id="{form_id}" version="{version}">
          <name/>
          <age/>
          <photo/>
          <village/>
          <members jr:template=""><member_name/><member_photo/></members>
          <members><member_name/><member_photo/></members>
          <meta><audit/><instanceID/><instanceName/></meta>
        </data>
      </instance>
      <instance id="villages" src="jr://file-csv/villages.csv"/>
      <bind nodeset="/data/name" type="string"/>
      <bind nodeset="/data/age" type="int"/>
      <bind nodeset="/data/photo" type="binary"/>
      <bind nodeset="/data/village" type="string"/>
      <bind nodeset="/data/members/member_name" type="string"/>
      <bind nodeset="/data/members/member_photo" type="binary"/>
      <bind nodeset="/data/meta/audit" type="binary"/>
      <bind nodeset="/data/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/>
      <bind nodeset="/data/meta/instanceName" type="string" calculate="concat(/data/name)"/>
    </model>
  </h:head>
  <h:body>
    <input ref="/data/name"><label>Nom</label></input>
    <input ref="/data/age"><label>Âge</label></input>
    <upload mediatype="image/*" ref="/data/photo"><label>Photo</label></upload>
    <select1 ref="/data/village"><label>Village</label>
      <itemset nodeset="instance('villages')/root/item">
        <value ref="name"/><label ref="label"/></itemset>
    </select1>
    <group ref="/data/members"><label>Membres</label>
      <repeat nodeset="/data/members">
        <input ref="/data/members/member_name"><label>Nom du membre</label></input>
        <upload mediatype="image/*" ref="/data/members/member_photo"><label>Photo</label></upload>
      </repeat>
    </group>
  </h:body>
</h:html>
"""


def _field(path, type_, *, kind="field", control=None, parent=None, repeat=None, audit=False):
    repeats = [repeat] if repeat else []
    return {
        "path": path,
        "name": path.rsplit("/", 1)[1],
        "kind": kind,
        "type": type_,
        "control": control,
        "mediatype": "image/*" if control == "upload" else None,
        "labels": {},
        "choices": None,
        "parent": parent,
        "repeat": repeat,
        "repeats": repeats,
        "required": False,
        "readonly": False,
        "relevant": None,
        "calculate": None,
        "constraint": None,
        "preload": None,
        "preloadParams": None,
        "pii": False,
        "audit": audit,
    }


def schema(form_id: str = FORM_ID, version: str = VERSION) -> dict:
    """The field schema of XFORM, written out as the forms service stores it."""
    return {
        "formId": form_id,
        "version": version,
        "title": "Enquête ménage",
        "root": "data",
        "languages": [],
        "defaultLanguage": None,
        "instanceName": "concat(/data/name)",
        "publicKey": None,
        "submissionUrl": None,
        "media": [{"name": "villages.csv", "type": "file"}],
        "choiceLists": {},
        "fields": [
            _field("/data/name", "string", control="input"),
            _field("/data/age", "int", control="input"),
            _field("/data/photo", "binary", control="upload"),
            _field("/data/village", "select_one", control="select1"),
            _field("/data/members", "repeat", kind="repeat"),
            _field(
                "/data/members/member_name",
                "string",
                control="input",
                parent="/data/members",
                repeat="/data/members",
            ),
            _field(
                "/data/members/member_photo",
                "binary",
                control="upload",
                parent="/data/members",
                repeat="/data/members",
            ),
            _field("/data/meta", "group", kind="group"),
            _field("/data/meta/audit", "binary", parent="/data/meta", audit=True),
            _field("/data/meta/instanceID", "string", parent="/data/meta"),
            _field("/data/meta/instanceName", "string", parent="/data/meta"),
        ],
    }


VILLAGES_CSV = "name,label\nsegou,Ségou\nbla,Bla\n".encode()


def publish_form(
    db_session: Session,
    project_id: int,
    *,
    form_id: str = FORM_ID,
    version: str = VERSION,
    state: str = "open",
    draft: bool = False,
    draft_token: str | None = None,
    app_user_ids: tuple[int, ...] = (),
) -> Form:
    """Create a form with one version (published, or as a draft) and its CSV media."""
    xml = XFORM.format(form_id=form_id, version=version)
    form = Form(project_id=project_id, xml_form_id=form_id, state=state)
    db_session.add(form)
    db_session.flush()
    form_version = FormVersion(
        form_id=form.id,
        version=version,
        title="Enquête ménage",
        xml=xml,
        hash=hashlib.md5(xml.encode()).hexdigest(),
        sha256=hashlib.sha256(xml.encode()).hexdigest(),
        schema=schema(form_id, version),
        published_at=None if draft else utcnow(),
        draft_token=draft_token,
    )
    db_session.add(form_version)
    db_session.flush()
    blob = storage.save_stream(db_session, io.BytesIO(VILLAGES_CSV))
    db_session.add(
        FormAttachment(
            form_id=form.id,
            form_version_id=form_version.id,
            name="villages.csv",
            type="file",
            blob_id=blob.id,
            content_type="text/csv",
        )
    )
    if draft:
        form.draft_version_id = form_version.id
    else:
        form.current_version_id = form_version.id
    for actor_id in app_user_ids:
        accounts.assign(db_session, actor_id, "app-user", form_id=form.id, by=None)
    db_session.commit()
    return form


def new_instance_id() -> str:
    return f"uuid:{uuid.uuid4()}"


def record(
    instance_id: str,
    *,
    name: str = "Awa Traoré",
    age: str = "34",
    photo: str | None = "1715090512345.jpg",
    members: tuple = (),
    deprecated_id: str | None = None,
    audit: str | None = "audit.csv",
    form_id: str = FORM_ID,
    version: str = VERSION,
) -> bytes:
    """Return a record's XML the way Collect writes it."""
    members_xml = "".join(
        f"<members><member_name>{escape(m)}</member_name><member_photo>{escape(p or '')}"
        f"</member_photo></members>"
        for m, p in members
    )
    deprecated = f"<deprecatedID>{deprecated_id}</deprecatedID>" if deprecated_id else ""
    xml = (
        f'<?xml version="1.0" ?><data xmlns:jr="http://openrosa.org/javarosa" '
        f'xmlns:orx="http://openrosa.org/xforms" id="{form_id}" version="{version}">'
        f"<name>{escape(name)}</name><age>{age}</age><photo>{escape(photo or '')}</photo>"
        f"<village>segou</village>{members_xml}"
        f"<meta><audit>{audit or ''}</audit><instanceID>{instance_id}</instanceID>"
        f"<instanceName>{escape(name)}</instanceName>{deprecated}</meta></data>"
    )
    return xml.encode("utf-8")


JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"


def jpeg(seed: int = 0, size: int = 10_000) -> bytes:
    """Return distinct bytes that look like a JPEG."""
    body = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    return b"\xff\xd8\xff\xe0" + body[:size] + b"\xff\xd9"


def multipart(
    xml: bytes,
    files: dict[str, bytes] | None = None,
    *,
    incomplete: bool = False,
    xml_filename: str = "Enquete_menage_2024-05-07_14-01-55.xml",
) -> dict:
    """Return a test-client ``data=`` dict shaped like Collect's multipart POST (§4.2)."""
    data: dict = {"xml_submission_file": (io.BytesIO(xml), xml_filename, "text/xml")}
    for name, content in (files or {}).items():
        content_type = (
            "image/jpeg"
            if name.endswith(".jpg")
            else ("text/csv" if name.endswith(".csv") else "application/octet-stream")
        )
        data.setdefault(name, [])
        data[name] = (io.BytesIO(content), name, content_type)
    if incomplete:
        data["*isIncomplete*"] = "yes"
    return data


OPENROSA = {"X-OpenRosa-Version": "1.0"}


def message_of(response) -> str:
    """Return the text of an OpenRosaResponse's message."""
    match = re.search(rb"<message[^>]*>(.*?)</message>", response.data, re.S)
    assert match, response.data
    return match.group(1).decode()


DEVICE_ID = "collect:AbC123dEf456GhIj"


def post_record(client, base: str, xml: bytes, files=None, **kwargs):  # type: ignore[no-untyped-def]
    """POST a record to a tablet's OpenRosa address as Collect does (multipart, deviceID)."""
    return client.post(
        f"{base}/submission?deviceID=collect%3AAbC123dEf456GhIj",
        data=multipart(xml, files, **kwargs),
        headers=OPENROSA,
        content_type="multipart/form-data",
    )
