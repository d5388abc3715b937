"""Intake over the OpenRosa endpoint, replaying what ODK Collect sends (openrosa.md §4).

Each test is named after the rule it checks. Every one runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import io
import json

import pytest
import sqlalchemy as sa

from server import db
from server.audit.models import AuditEvent
from server.storage.models import Blob
from server.submissions import parsing
from server.submissions.intake import IncomingFile, durable, target, upload, writing
from server.submissions.models import (
    Submission,
    SubmissionAttachment,
    SubmissionConflict,
    SubmissionVersion,
)
from tests.support import factories
from tests.support.openrosa import (
    OPENROSA,
    jpeg,
    message_of,
    multipart,
    new_instance_id,
    publish_form,
    record,
)


@pytest.fixture
def device(db_session):
    """A project with the form published and one tablet (app user) assigned to it."""
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


def post(client, device, xml, files=None, **kwargs):
    return client.post(
        f"{device['base']}/submission?deviceID=collect%3AAbC123dEf456GhIj",
        data=multipart(xml, files, **kwargs),
        headers=OPENROSA,
        content_type="multipart/form-data",
    )


def count(db_session, model):
    db_session.expire_all()
    return db_session.scalar(sa.select(sa.func.count()).select_from(model))


def test_a_new_record_is_stored_and_answered_201_with_an_openrosa_message(
    client, device, db_session
):
    iid = new_instance_id()
    photo, audit = jpeg(1), b"event,node,start,end\nform start,,1,\n"
    response = post(client, device, record(iid), {"1715090512345.jpg": photo, "audit.csv": audit})
    assert response.status_code == 201, response.data
    assert response.content_type == "text/xml; charset=utf-8"
    assert response.headers["X-OpenRosa-Version"] == "1.0"
    assert message_of(response) == "Fiche reçue : Awa Traoré."  # French by default
    submission = db_session.scalars(sa.select(Submission)).one()
    assert submission.instance_id == iid
    assert submission.device_id == "collect:AbC123dEf456GhIj"
    assert submission.submitter_id == device["app_user"].actor_id
    version = db_session.scalars(sa.select(SubmissionVersion)).one()
    assert version.current and version.raw_xml.encode() == record(iid)
    assert version.raw_document["name"] == "Awa Traoré"
    assert version.raw_document["members"] == []
    assert (version.attachments_expected, version.attachments_present) == (2, 2)
    slots = {a.name: a for a in db_session.scalars(sa.select(SubmissionAttachment))}
    assert set(slots) == {"1715090512345.jpg", "audit.csv"}
    assert slots["audit.csv"].is_client_audit and not slots["1715090512345.jpg"].is_client_audit
    assert slots["1715090512345.jpg"].content_type == "image/jpeg"
    blob = db_session.get(Blob, slots["1715090512345.jpg"].blob_id)
    assert blob.sha256 == hashlib.sha256(photo).hexdigest()


def test_a_record_split_over_three_posts_becomes_one_complete_record(client, device, db_session):
    iid = new_instance_id()
    members = (("Fanta", "m1.jpg"), ("Oumar", "m2.jpg"))
    xml = record(iid, members=members)
    files = {
        "1715090512345.jpg": jpeg(1),
        "m1.jpg": jpeg(2),
        "m2.jpg": jpeg(3),
        "audit.csv": b"event\n",
    }
    names = list(files)
    first = post(client, device, xml, {n: files[n] for n in names[:2]}, incomplete=True)
    assert first.status_code == 201
    assert "2" in message_of(first) and "4" in message_of(first)  # 2 of 4 files so far
    second = post(client, device, xml, {names[2]: files[names[2]]}, incomplete=True)
    third = post(client, device, xml, {names[3]: files[names[3]]})
    assert second.status_code == third.status_code == 201
    # The tablet is told when the last file has come (and not that it sent a duplicate).
    assert message_of(third) == "Fiche complète : tous ses fichiers ont été reçus."
    assert count(db_session, Submission) == 1
    version = db_session.scalars(sa.select(SubmissionVersion)).one()
    assert (version.attachments_expected, version.attachments_present) == (4, 4)
    assert [m["member_name"] for m in version.raw_document["members"]] == ["Fanta", "Oumar"]


def test_a_retry_after_a_lost_response_is_201_and_stores_nothing_twice(client, device, db_session):
    iid = new_instance_id()
    files = {"1715090512345.jpg": jpeg(1), "audit.csv": b"event\n"}
    assert post(client, device, record(iid), files).status_code == 201
    again = post(client, device, record(iid), files)
    assert again.status_code == 201
    assert message_of(again) == "Cette fiche avait déjà été reçue. Rien n’a été perdu."
    assert count(db_session, Submission) == 1
    assert count(db_session, SubmissionVersion) == 1
    assert count(db_session, SubmissionAttachment) == 2
    assert count(db_session, Blob) == 3  # two attachments and the form's CSV


def test_resending_the_whole_instance_folder_ignores_files_the_record_does_not_name(
    client, device, db_session
):
    iid = new_instance_id()
    response = post(
        client,
        device,
        record(iid, audit=None),
        {"1715090512345.jpg": jpeg(1), "stale-photo.jpg": jpeg(9), "../../etc/passwd": b"root"},
    )
    assert response.status_code == 201
    assert [a.name for a in db_session.scalars(sa.select(SubmissionAttachment))] == [
        "1715090512345.jpg"
    ]
    assert count(db_session, Blob) == 2


def test_same_instance_id_with_different_xml_is_409_and_the_payload_is_kept(
    client, device, db_session
):
    iid = new_instance_id()
    assert post(client, device, record(iid, photo=None, audit=None)).status_code == 201
    changed = record(iid, age="35", photo=None, audit=None)
    response = post(client, device, changed)
    assert response.status_code == 409
    assert "instanceID" in message_of(response)
    conflict = db_session.scalars(sa.select(SubmissionConflict)).one()
    assert conflict.raw_xml.encode() == changed and conflict.instance_id == iid
    assert post(client, device, changed).status_code == 409
    assert count(db_session, SubmissionConflict) == 1  # a device retrying is kept once
    version = db_session.scalars(sa.select(SubmissionVersion)).one()
    assert version.raw_document["age"] == "34"  # the stored record is untouched


def test_an_edit_becomes_a_new_version_and_carries_attachments_forward(client, device, db_session):
    first_id, second_id = new_instance_id(), new_instance_id()
    photo = jpeg(1)
    assert (
        post(
            client, device, record(first_id), {"1715090512345.jpg": photo, "audit.csv": b"a\n"}
        ).status_code
        == 201
    )
    edit = record(second_id, age="35", deprecated_id=first_id)
    response = post(client, device, edit, {"audit.csv": b"b\n"})
    assert response.status_code == 201
    assert message_of(response) == "Fiche modifiée reçue."
    submission = db_session.scalars(sa.select(Submission)).one()
    assert submission.instance_id == first_id and submission.review_state == "edited"
    versions = db_session.scalars(sa.select(SubmissionVersion).order_by(SubmissionVersion.id)).all()
    assert [(v.instance_id, v.current) for v in versions] == [(first_id, False), (second_id, True)]
    assert versions[1].deprecated_id == first_id
    assert (versions[1].attachments_expected, versions[1].attachments_present) == (2, 2)
    slots = {
        a.name: a
        for a in db_session.scalars(
            sa.select(SubmissionAttachment).where(
                SubmissionAttachment.submission_version_id == versions[1].id
            )
        )
    }
    photo_blob = db_session.get(Blob, slots["1715090512345.jpg"].blob_id)
    assert photo_blob.sha256 == hashlib.sha256(photo).hexdigest()
    audit_blob = db_session.get(Blob, slots["audit.csv"].blob_id)
    assert audit_blob.sha256 == hashlib.sha256(b"b\n").hexdigest()


def test_an_edit_of_a_version_that_is_no_longer_current_is_409(client, device, db_session):
    a, b, c = new_instance_id(), new_instance_id(), new_instance_id()
    post(client, device, record(a, photo=None, audit=None))
    assert (
        post(client, device, record(b, deprecated_id=a, photo=None, audit=None)).status_code == 201
    )
    stale = post(client, device, record(c, deprecated_id=a, photo=None, audit=None))
    assert stale.status_code == 409
    assert count(db_session, SubmissionVersion) == 2


def test_an_edit_of_an_unknown_record_is_404(client, device):
    response = post(
        client,
        device,
        record(new_instance_id(), deprecated_id=new_instance_id(), photo=None, audit=None),
    )
    assert response.status_code == 404


def test_the_edit_resent_after_a_lost_response_is_a_duplicate(client, device, db_session):
    a, b = new_instance_id(), new_instance_id()
    post(client, device, record(a, photo=None, audit=None))
    edit = record(b, deprecated_id=a, photo=None, audit=None)
    assert post(client, device, edit).status_code == 201
    assert post(client, device, edit).status_code == 201
    assert count(db_session, SubmissionVersion) == 2


def test_unknown_form_is_404_with_a_message(client, device):
    response = post(client, device, record(new_instance_id(), form_id="inconnu"))
    assert response.status_code == 404
    assert "inconnu" in message_of(response)


def test_unknown_form_version_is_404_6(client, device):
    response = post(client, device, record(new_instance_id(), version="1999"))
    assert response.status_code == 404
    assert "1999" in message_of(response)


def test_closed_form_refuses_records_and_closing_form_accepts_them(client, device, db_session):
    form = device["form"]
    form.state = "closing"
    db_session.merge(form)
    db_session.commit()
    assert (
        post(client, device, record(new_instance_id(), photo=None, audit=None)).status_code == 201
    )
    form.state = "closed"
    db_session.merge(form)
    db_session.commit()
    response = post(client, device, record(new_instance_id(), photo=None, audit=None))
    assert response.status_code == 409
    assert "fermé" in message_of(response)


def test_a_form_the_device_is_not_assigned_to_is_refused(client, device, db_session):
    publish_form(db_session, device["project"].id, form_id="autre")
    response = post(client, device, record(new_instance_id(), form_id="autre"))
    assert response.status_code == 404
    assert count(db_session, Submission) == 0


def test_a_bad_token_is_403_never_401(client, device):
    response = client.post(
        f"/v1/key/{'z' * 64}/projects/{device['project'].id}/submission",
        data=multipart(record(new_instance_id())),
        headers=OPENROSA,
    )
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response.headers
    assert "QR" in message_of(response)


def test_a_record_without_the_xml_part_is_400_with_a_message(client, device):
    response = client.post(
        f"{device['base']}/submission",
        headers=OPENROSA,
        data={"photo.jpg": (__import__("io").BytesIO(b"x"), "photo.jpg")},
    )
    assert response.status_code == 400
    assert "xml_submission_file" in message_of(response)


@pytest.mark.parametrize(
    "hostile",
    [
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        b'<data id="menage">&b;</data>',
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<data id="menage">&x;</data>',
        b"<data id='menage'><unclosed></data>",
        b"<data id='menage'>" + b"<a>" * 100 + b"</a>" * 100 + b"</data>",
        b"\xff\xfe not xml",
    ],
)
def test_hostile_or_malformed_xml_is_400_and_stores_nothing(client, device, db_session, hostile):
    response = post(client, device, hostile)
    assert response.status_code == 400
    assert message_of(response)
    assert count(db_session, Submission) == 0


def test_a_body_above_the_limit_is_413_with_an_openrosa_message(client, device, app, db_session):
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_UPLOAD_BYTES"] = 50_000
    head = client.head(f"{device['base']}/submission", headers=OPENROSA)
    # A limit this small leaves half for files (protocol.advertised_upload_bytes).
    assert head.headers["X-OpenRosa-Accept-Content-Length"] == "25000"
    response = post(
        client, device, record(new_instance_id()), {"1715090512345.jpg": jpeg(1, size=60_000)}
    )
    assert response.status_code == 413
    assert response.headers["X-OpenRosa-Version"] == "1.0"
    assert "50000" in message_of(response)
    assert count(db_session, Submission) == 0


def test_utf8_file_names_are_matched(client, device, db_session):
    iid = new_instance_id()
    name = "photo_Ségou_été.jpg"
    response = post(client, device, record(iid, photo=name, audit=None), {name: jpeg(4)})
    assert response.status_code == 201
    slot = db_session.scalars(sa.select(SubmissionAttachment)).one()
    assert slot.name == name and slot.blob_id is not None


def test_identical_attachments_of_two_records_are_stored_once(client, device, db_session):
    photo = jpeg(7)
    post(client, device, record(new_instance_id(), audit=None), {"1715090512345.jpg": photo})
    post(client, device, record(new_instance_id(), audit=None), {"1715090512345.jpg": photo})
    assert count(db_session, Submission) == 2
    assert count(db_session, Blob) == 2  # the photo once, and the form's CSV


def test_a_deleted_record_sent_again_is_409(client, device, db_session):
    iid = new_instance_id()
    post(client, device, record(iid, photo=None, audit=None))
    from server.db import utcnow

    submission = db_session.scalars(sa.select(Submission)).one()
    submission.deleted_at = utcnow()
    db_session.commit()
    response = post(client, device, record(iid, photo=None, audit=None))
    assert response.status_code == 409


def test_a_record_without_instance_id_gets_one(client, device, db_session):
    xml = record("", photo=None, audit=None).replace(b"<instanceID></instanceID>", b"")
    assert post(client, device, xml).status_code == 201
    assert db_session.scalars(sa.select(Submission)).one().instance_id.startswith("uuid:")


def encrypted_envelope(instance_id: str) -> bytes:
    return (
        '<data xmlns="http://www.opendatakit.org/xforms/encrypted" id="menage" '
        'version="2024050701" encrypted="yes"><base64EncryptedKey>Qk9PTQ==</base64EncryptedKey>'
        '<orx:meta xmlns:orx="http://openrosa.org/xforms">'
        f"<orx:instanceID>{instance_id}</orx:instanceID></orx:meta>"
        "<media><file>1715090512345.jpg.enc</file></media>"
        "<encryptedXmlFile>submission.xml.enc</encryptedXmlFile>"
        "<base64EncryptedElementSignature>Zm9v</base64EncryptedElementSignature></data>"
    ).encode()


def test_an_encrypted_record_is_stored_as_received_and_marked_encrypted(client, device, db_session):
    iid = new_instance_id()
    files = {"1715090512345.jpg.enc": b"\x01" * 4000, "submission.xml.enc": b"\x02" * 900}
    response = post(client, device, encrypted_envelope(iid), files)
    assert response.status_code == 201
    version = db_session.scalars(sa.select(SubmissionVersion)).one()
    assert version.encrypted and version.raw_document is None
    assert version.encrypted_key == "Qk9PTQ==" and version.encrypted_signature == "Zm9v"
    assert version.encrypted_xml_name == "submission.xml.enc"
    assert (version.attachments_expected, version.attachments_present) == (2, 2)
    slots = db_session.scalars(
        sa.select(SubmissionAttachment).order_by(SubmissionAttachment.encryption_index)
    ).all()
    assert [(s.name, s.encryption_index) for s in slots] == [
        ("1715090512345.jpg.enc", 0),
        ("submission.xml.enc", 1),
    ]


def test_an_encrypted_record_without_instance_id_is_refused(client, device, db_session):
    xml = encrypted_envelope("x").replace(b"<orx:instanceID>x</orx:instanceID>", b"")
    response = post(client, device, xml)
    assert response.status_code == 400
    assert count(db_session, Submission) == 0


def test_a_new_record_reusing_an_edits_instance_id_is_a_conflict_not_a_second_record(
    client, device, db_session
):
    a, b = new_instance_id(), new_instance_id()
    post(client, device, record(a, photo=None, audit=None))
    post(client, device, record(b, deprecated_id=a, age="40", photo=None, audit=None))
    response = post(client, device, record(b, age="41", photo=None, audit=None))
    assert response.status_code == 409
    assert count(db_session, Submission) == 1
    assert count(db_session, SubmissionVersion) == 2


@pytest.mark.parametrize(
    "listed",
    [
        "<media><file>a.jpg.enc</file></media><media><file>a.jpg.enc</file></media>",
        "<media><file>submission.xml.enc</file></media>",
    ],
)
def test_an_encrypted_envelope_naming_a_file_twice_is_400_not_500(
    client, device, db_session, listed
):
    xml = encrypted_envelope(new_instance_id()).replace(
        b"<media><file>1715090512345.jpg.enc</file></media>", listed.encode()
    )
    response = post(client, device, xml)
    assert response.status_code == 400
    assert "twice" in message_of(response) or "deux fois" in message_of(response)
    assert count(db_session, Submission) == 0


# ---- the two ways of writing a new record (server/submissions/intake/writing.py) --------------

# Columns that differ between two records whatever the way they were written.
_OWN_TO_EACH_RECORD = {
    "id",
    "submission_id",
    "submission_version_id",
    "seq",
    "created_at",
    "logged_at",
    "updated_at",
    "xml_sha256",
    "blob_id",
}


def _rows_written(db_session, device, way, xml_of, files) -> dict:
    """Write one new record by ``way`` as intake does; return its rows, made comparable."""
    iid = new_instance_id()
    xml = xml_of(iid)
    parsed = parsing.read_submission(xml)
    found = target.find(db_session, device["project"].id, parsed, draft=False, authorize=None)
    arrived = upload.read(
        db_session,
        found,
        parsed,
        xml,
        actor_id=device["app_user"].actor_id,
        device_id="collect:AbC123dEf456GhIj",
        user_agent="org.odk.collect.android/v2024.2.4",
        require_deprecation=False,
    )
    durable.make_durable(arrived, [IncomingFile(n, io.BytesIO(b)) for n, b in files.items()])
    durable.catalogue(arrived)
    receipt = way(arrived)
    assert receipt is not None and receipt.outcome == "created"
    db_session.commit()

    def rows(table, *where):
        found = db_session.execute(sa.select(table).where(*where)).mappings().all()
        kept = [{k: v for k, v in r.items() if k not in _OWN_TO_EACH_RECORD} for r in found]
        return json.loads(json.dumps(kept, default=str).replace(iid, "<instanceID>"))

    return {
        "submission": rows(Submission.__table__, Submission.id == receipt.submission_id),
        "version": rows(SubmissionVersion.__table__, SubmissionVersion.id == receipt.version_id),
        "document is SQL NULL": db_session.execute(
            sa.select(SubmissionVersion.__table__.c.document.is_(None)).where(
                SubmissionVersion.id == receipt.version_id
            )
        ).scalar_one(),
        "events": rows(AuditEvent.__table__, AuditEvent.submission_id == receipt.submission_id),
        "slots": rows(
            SubmissionAttachment.__table__,
            SubmissionAttachment.submission_version_id == receipt.version_id,
        ),
    }


@pytest.mark.parametrize(
    ("xml_of", "files"),
    [
        (record, {"1715090512345.jpg": jpeg(7)}),
        (encrypted_envelope, {"1715090512345.jpg.enc": b"\x01" * 400}),
    ],
    ids=["plain", "encrypted"],
)
def test_a_new_record_written_in_one_statement_has_the_rows_of_the_generic_path(
    app, device, xml_of, files
):
    """PostgreSQL writes a new record in one statement, the others statement by statement.

    Both are built from the same rows: every column, the audit event and the slots included,
    comes out the same (an encrypted record's document is SQL NULL both ways).
    """
    with app.app_context(), db.database().session() as db_session:
        if db_session.get_bind().dialect.name != "postgresql":
            pytest.skip("only PostgreSQL writes a new record in one statement")
        one_statement, generic = (
            _rows_written(db_session, device, way, xml_of, files)
            for way in (writing.create_unless_known, writing.create)
        )
    assert one_statement == generic
    assert one_statement["version"][0]["attachments_present"] == 1
    assert len(one_statement["events"]) == 1 and len(one_statement["slots"]) >= 2
