"""Encrypted forms end to end, on SQLite and PostgreSQL (openrosa.md §6, central-api.md).

A coordinator uploads an XLSForm, turns managed encryption on with a passphrase, a tablet
downloads the form as ODK Collect does, encrypts a record exactly as Collect does
(:mod:`tests.support.collect_crypto`), sends it through the OpenRosa endpoint; the server keeps
it encrypted, and the decryptor exports use gives back the original XML and photo with the
passphrase. Self-managed forms (XLSForm ``public_key``) go the same way with a private key
supplied for the export.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid

import pytest
import sqlalchemy as sa
from lxml import etree

from server import errors
from server.crypto import decryptor
from server.forms.models import Form, FormVersion
from server.projects.models import Project, ProjectKey
from server.submissions.models import SubmissionAttachment, SubmissionVersion
from tests.fixtures.forms import workbooks
from tests.support import collect_crypto, factories
from tests.support.openrosa import OPENROSA

PASSPHRASE = "Tombouctou est loin, la clé reste ici"
XLSX = workbooks.XLSX_TYPE

INTERVIEW = """
| survey |
|        | type  | name  | label | parameters      |
|        | text  | nom   | Nom   |                 |
|        | image | photo | Photo | max-pixels=1024 |
|        | audit | audit |       |                 |
| settings |
|          | form_id   | version    | form_title |
|          | entretien | 2024061201 | Entretien  |
"""

PHOTO = b"\xff\xd8\xff\xe0" + hashlib.sha256(b"portrait").digest() * 900 + b"\xff\xd9"
AUDIT = b"event,node,start,end\nform start,,1718200000000,\n"


def self_managed(public_key: str) -> str:
    """The interview form with its own public key (XLSForm ``settings.public_key``)."""
    return INTERVIEW.replace(
        "| form_id   | version    | form_title |", "| form_id | version | form_title | public_key |"
    ).replace("| entretien | 2024061201 | Entretien  |", f"| secret | 1 | Secret | {public_key} |")


@pytest.fixture
def team(client, db_session):
    """A project with a coordinator and a tablet."""
    project = factories.project(db_session, "Entretiens Mopti")
    factories.user(db_session, "coord@example.org", role="manager", project_id=project.id)
    _, token = factories.app_user(db_session, project.id, "Tablette 3")
    return {
        "project_id": project.id,
        "base": f"/v1/projects/{project.id}",
        "manager": login(client, "coord@example.org"),
        "tablet": f"/v1/key/{token}/projects/{project.id}",
        "token": token,
    }


def login(client, email: str) -> dict[str, str]:
    answer = client.post("/v1/sessions", json={"email": email, "password": factories.PASSWORD})
    return {"Authorization": f"Bearer {answer.json['token']}"}


def analyst(client, db_session, team) -> dict[str, str]:
    """An analyst (viewer) of the project, signed in."""
    factories.user(db_session, "analyste@example.org", role="viewer", project_id=team["project_id"])
    return login(client, "analyste@example.org")


def publish(client, team, markdown: str) -> dict:
    """Upload and publish an XLSForm as the coordinator; assign it to the tablet."""
    response = client.post(
        f"{team['base']}/forms?publish=true",
        data=workbooks.xlsx(markdown),
        headers={**team["manager"], "Content-Type": XLSX},
    )
    assert response.status_code == 200, response.json
    form = response.json
    app_users = client.get(f"{team['base']}/app-users", headers=team["manager"]).json
    for app_user in app_users:
        client.post(
            f"{team['base']}/forms/{form['xmlFormId']}/assignments/2/{app_user['id']}",
            headers=team["manager"],
        )
    return form


def enable(client, team, passphrase: str = PASSPHRASE, hint: str | None = "la ville du nord"):
    return client.post(
        f"{team['base']}/key",
        json={"passphrase": passphrase, "hint": hint},
        headers=team["manager"],
    )


def download(client, team, form_id: str) -> tuple[bytes, str, str | None]:
    """Fetch the form as Collect does: formList, then the XForm; return it, version, key."""
    listing = client.get(f"{team['tablet']}/formList", headers=OPENROSA)
    assert listing.status_code == 200
    entry = re.search(
        rf"<xform>\s*<formID>{form_id}</formID>.*?</xform>".encode(), listing.data, re.S
    )
    assert entry, listing.data
    url = re.search(rb"<downloadUrl>(.*?)</downloadUrl>", entry.group(0)).group(1).decode()
    listed_hash = re.search(rb"<hash>md5:(\w+)</hash>", entry.group(0)).group(1).decode()
    xml = client.get(url.split("localhost", 1)[-1], headers=OPENROSA)
    assert xml.status_code == 200
    assert hashlib.md5(xml.data).hexdigest() == listed_hash  # openrosa.md §8.4
    root = etree.fromstring(xml.data)
    ns = {"xf": "http://www.w3.org/2002/xforms", "h": "http://www.w3.org/1999/xhtml"}
    data = root.find("h:head/xf:model/xf:instance", ns)[0]
    submission = root.find("h:head/xf:model/xf:submission", ns)
    key = submission.get("base64RsaPublicKey") if submission is not None else None
    return xml.data, data.get("version"), key


def filled(form_id: str, version: str, instance_id: str, name: str = "Moussa Diarra") -> bytes:
    """The record's XML as Collect writes it before encrypting it."""
    return (
        f'<?xml version="1.0" ?><data xmlns:jr="http://openrosa.org/javarosa" '
        f'xmlns:orx="http://openrosa.org/xforms" id="{form_id}" version="{version}">'
        f"<nom>{name}</nom><photo>1718200000001.jpg</photo>"
        f"<meta><audit>audit.csv</audit><instanceID>{instance_id}</instanceID></meta></data>"
    ).encode()


def send(client, team, envelope: bytes, files: dict[str, bytes], *, incomplete: bool = False):
    data = {"xml_submission_file": (io.BytesIO(envelope), "submission.xml", "text/xml")}
    for name, content in files.items():
        data[name] = (io.BytesIO(content), name, "application/octet-stream")
    if incomplete:
        data["*isIncomplete*"] = "yes"
    return client.post(
        f"{team['tablet']}/submission?deviceID=collect%3Atablette3",
        data=data,
        headers=OPENROSA,
        content_type="multipart/form-data",
    )


def the_form(db_session, team, form_id: str) -> Form:
    db_session.rollback()  # a fresh snapshot: requests committed since
    return db_session.execute(
        sa.select(Form).where(Form.project_id == team["project_id"], Form.xml_form_id == form_id)
    ).scalar_one()


def stored(db_session, instance_id: str) -> SubmissionVersion:
    db_session.rollback()  # a fresh snapshot: requests committed since
    return db_session.execute(
        sa.select(SubmissionVersion).where(SubmissionVersion.instance_id == instance_id)
    ).scalar_one()


def encrypt_and_send(client, team, form_id: str, *, media=None):
    _, version, key = download(client, team, form_id)
    instance_id = f"uuid:{uuid.uuid4()}"
    xml = filled(form_id, version, instance_id)
    media = [("1718200000001.jpg", PHOTO), ("audit.csv", AUDIT)] if media is None else media
    sent = collect_crypto.encrypt_submission(
        key, xml, media, form_id=form_id, version=version, instance_id=instance_id
    )
    return sent, xml, send(client, team, sent.envelope, sent.files)


# ---- managed encryption ----------------------------------------------------------------------


def test_a_managed_key_round_trips_a_collect_record_to_the_decryptor(client, team, db_session):
    publish(client, team, INTERVIEW)
    plain_xml, plain_version, plain_key = download(client, team, "entretien")
    assert plain_key is None and plain_version == "2024061201"

    response = enable(client, team)
    assert response.status_code == 200, response.json
    project = response.json
    assert project["id"] == team["project_id"] and project["keyId"] is not None
    key = db_session.get(ProjectKey, project["keyId"])
    assert key.managed and key.hint == "la ville du nord"

    # The tablet sees a new version of the form, carrying the project's public key.
    xform, version, public = download(client, team, "entretien")
    assert public == key.public
    assert re.fullmatch(r"2024061201\[encrypted:[A-Za-z0-9_-]{8}\]", version)
    form_json = client.get(f"{team['base']}/forms/entretien", headers=team["manager"]).json
    assert form_json["keyId"] == key.id and form_json["version"] == version
    assert form_json["hash"] == hashlib.md5(xform).hexdigest()
    # Only the key and the version changed: the tablet's form is otherwise the one uploaded.
    assert re.sub(rb'version="[^"]*"', b"", xform).replace(
        f'<submission method="post" base64RsaPublicKey="{public}"/>'.encode(), b""
    ) == re.sub(rb'version="[^"]*"', b"", plain_xml)

    sent, xml, answer = encrypt_and_send(client, team, "entretien")
    assert answer.status_code == 201, answer.data

    version_row = stored(db_session, sent.instance_id)
    assert version_row.encrypted and version_row.raw_document is None
    assert version_row.raw_xml.encode() == sent.envelope
    assert (version_row.attachments_expected, version_row.attachments_present) == (3, 3)
    slots = db_session.scalars(
        sa.select(SubmissionAttachment)
        .where(SubmissionAttachment.submission_version_id == version_row.id)
        .order_by(SubmissionAttachment.encryption_index)
    ).all()
    assert [(s.name, s.encryption_index) for s in slots] == [
        ("1718200000001.jpg.enc", 0),
        ("audit.csv.enc", 1),
        ("submission.xml.enc", 2),
    ]

    decrypt = decryptor(
        db_session, the_form(db_session, team, "entretien"), passphrases={key.id: PASSPHRASE}
    )
    record = decrypt(version_row)
    assert record.xml == xml
    assert record.instance_id == sent.instance_id
    assert [(m.name, m.read(), m.client_audit) for m in record.media] == [
        ("1718200000001.jpg", PHOTO, False),
        ("audit.csv", AUDIT, True),
    ]
    assert record.signature == "valid"


def test_the_keys_of_a_forms_records_are_listed_once_records_use_them(client, team, db_session):
    publish(client, team, INTERVIEW)
    enable(client, team)
    keys_url = f"{team['base']}/forms/entretien/submissions/keys"
    assert client.get(keys_url, headers=team["manager"]).json == []
    encrypt_and_send(client, team, "entretien")
    encrypt_and_send(client, team, "entretien", media=[])
    listed = client.get(keys_url, headers=team["manager"])
    assert listed.status_code == 200
    [key] = listed.json
    stored_key = db_session.get(ProjectKey, key["id"])
    assert key == {
        "id": stored_key.id,
        "public": stored_key.public,
        "managed": True,
        "hint": "la ville du nord",
        "createdAt": key["createdAt"],
    }
    assert "private" not in listed.get_data(as_text=True)
    assert client.get(keys_url, headers=analyst(client, db_session, team)).status_code == 403
    assert client.get(keys_url).status_code == 401
    missing = client.get(f"{team['base']}/forms/nope/submissions/keys", headers=team["manager"])
    assert missing.status_code == 404


def test_a_form_published_after_encryption_is_on_gets_the_key(client, team, db_session):
    enable(client, team)
    form = publish(client, team, INTERVIEW)
    key_id = client.get(team["base"], headers=team["manager"]).json["keyId"]
    assert form["keyId"] == key_id
    assert form["version"].startswith("2024061201[encrypted:")
    xform, version, public = download(client, team, "entretien")
    assert public == db_session.get(ProjectKey, key_id).public
    assert form["hash"] == hashlib.md5(xform).hexdigest()
    version_row = db_session.get(
        FormVersion, the_form(db_session, team, "entretien").current_version_id
    )
    assert version_row.key_id == key_id and version_row.schema["publicKey"] == public
    assert version_row.schema["version"] == version

    # A new draft of the same form, published, takes the key again under a new suffix.
    draft = client.post(
        f"{team['base']}/forms/entretien/draft",
        data=workbooks.xlsx(INTERVIEW.replace("2024061201", "2024061202")),
        headers={**team["manager"], "Content-Type": XLSX},
    )
    assert draft.status_code == 200, draft.json
    published = client.post(
        f"{team['base']}/forms/entretien/draft/publish", headers=team["manager"]
    )
    assert published.status_code == 200, published.json
    _, version2, public2 = download(client, team, "entretien")
    assert version2.startswith("2024061202[encrypted:") and public2 == public
    sent, xml, answer = encrypt_and_send(client, team, "entretien")
    assert answer.status_code == 201
    record = decryptor(
        db_session, the_form(db_session, team, "entretien"), passphrases={key_id: PASSPHRASE}
    )(stored(db_session, sent.instance_id))
    assert record.xml == xml and record.signature_valid


def test_a_draft_present_when_encryption_is_turned_on_gets_the_key_in_place(
    client, team, db_session
):
    publish(client, team, INTERVIEW)
    client.post(
        f"{team['base']}/forms/entretien/draft",
        data=workbooks.xlsx(INTERVIEW.replace("2024061201", "2024061202")),
        headers={**team["manager"], "Content-Type": XLSX},
    )
    key_id = enable(client, team).json["keyId"]
    form = the_form(db_session, team, "entretien")
    draft = db_session.get(FormVersion, form.draft_version_id)
    assert draft.version.startswith("2024061202[encrypted:") and draft.key_id == key_id
    assert draft.hash == hashlib.md5(draft.xml.encode()).hexdigest()
    assert 'base64RsaPublicKey="' in draft.xml


def test_records_sent_before_encryption_stay_readable_and_are_not_decrypted(
    client, team, db_session
):
    publish(client, team, INTERVIEW)
    instance_id = f"uuid:{uuid.uuid4()}"
    plain = send(client, team, filled("entretien", "2024061201", instance_id), {})
    assert plain.status_code == 201
    key_id = enable(client, team).json["keyId"]
    decrypt = decryptor(
        db_session, the_form(db_session, team, "entretien"), passphrases={key_id: PASSPHRASE}
    )
    version_row = stored(db_session, instance_id)
    assert not version_row.encrypted and version_row.raw_document["nom"] == "Moussa Diarra"
    assert decrypt(version_row) is None
    # A tablet that has not updated yet may still send on the old version: accepted, plain.
    late = send(client, team, filled("entretien", "2024061201", f"uuid:{uuid.uuid4()}"), {})
    assert late.status_code == 201


def test_a_wrong_passphrase_is_400_12_before_any_record_is_read(client, team, db_session):
    publish(client, team, INTERVIEW)
    key_id = enable(client, team).json["keyId"]
    encrypt_and_send(client, team, "entretien")
    form = the_form(db_session, team, "entretien")
    with pytest.raises(errors.Undecryptable) as caught:
        decryptor(db_session, form, passphrases={key_id: PASSPHRASE.upper()})
    assert PASSPHRASE.upper() not in str(caught.value)
    # Without any passphrase the records simply stay encrypted.
    sent, _, _ = encrypt_and_send(client, team, "entretien", media=[])
    assert decryptor(db_session, form)(stored(db_session, sent.instance_id)) is None


def test_a_record_still_arriving_is_not_decrypted_until_its_xml_is_there(client, team, db_session):
    publish(client, team, INTERVIEW)
    key_id = enable(client, team).json["keyId"]
    _, version, key = download(client, team, "entretien")
    instance_id = f"uuid:{uuid.uuid4()}"
    xml = filled("entretien", version, instance_id)
    sent = collect_crypto.encrypt_submission(
        key,
        xml,
        [("1718200000001.jpg", PHOTO)],
        form_id="entretien",
        version=version,
        instance_id=instance_id,
    )
    # Split upload (openrosa.md §4.2): the photo first, the encrypted XML in the next POST.
    first = send(
        client,
        team,
        sent.envelope,
        {"1718200000001.jpg.enc": sent.files["1718200000001.jpg.enc"]},
        incomplete=True,
    )
    assert first.status_code == 201
    decrypt = decryptor(
        db_session, the_form(db_session, team, "entretien"), passphrases={key_id: PASSPHRASE}
    )
    assert decrypt(stored(db_session, instance_id)) is None
    second = send(
        client, team, sent.envelope, {"submission.xml.enc": sent.files["submission.xml.enc"]}
    )
    assert second.status_code == 201
    record = decrypt(stored(db_session, instance_id))
    assert record.xml == xml and record.media[0].read() == PHOTO and record.signature_valid


def test_an_attachment_altered_on_the_way_is_reported_by_the_signature(client, team, db_session):
    publish(client, team, INTERVIEW)
    key_id = enable(client, team).json["keyId"]
    _, version, key = download(client, team, "entretien")
    instance_id = f"uuid:{uuid.uuid4()}"
    xml = filled("entretien", version, instance_id)
    sent = collect_crypto.encrypt_submission(
        key,
        xml,
        [("1718200000001.jpg", PHOTO)],
        form_id="entretien",
        version=version,
        instance_id=instance_id,
    )
    tampered = bytearray(sent.files["1718200000001.jpg.enc"])
    tampered[500] ^= 0xFF  # the bytes a tablet sent, changed on the way
    answer = send(
        client,
        team,
        sent.envelope,
        {
            "1718200000001.jpg.enc": bytes(tampered),
            "submission.xml.enc": sent.files["submission.xml.enc"],
        },
    )
    assert answer.status_code == 201
    record = decryptor(
        db_session, the_form(db_session, team, "entretien"), passphrases={key_id: PASSPHRASE}
    )(stored(db_session, instance_id))
    assert record.xml == xml
    assert record.signature == "invalid"


# ---- turning it on: rules ---------------------------------------------------------------------


def test_turning_managed_encryption_on_twice_is_409_4(client, team, db_session):
    first = enable(client, team)
    assert first.status_code == 200
    again = enable(client, team, "une autre phrase secrète")
    assert again.status_code == 409
    assert again.json["code"] == 409.4
    assert enable(client, team, "court").json["code"] == 409.4  # the state first, as Central
    db_session.rollback()  # a fresh snapshot: requests committed since
    assert db_session.scalar(sa.select(sa.func.count()).select_from(ProjectKey)) == 1
    assert db_session.get(Project, team["project_id"]).key_id == first.json["keyId"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"passphrase": "neuf car."}, 400.21),
        ({}, 400.2),
        ({"passphrase": 1234567890}, 400.2),
        ({"passphrase": PASSPHRASE, "hint": ["pas", "un texte"]}, 400.8),
    ],
)
def test_a_bad_passphrase_is_a_4xx_and_nothing_changes(client, team, db_session, body, code):
    response = client.post(f"{team['base']}/key", json=body, headers=team["manager"])
    assert response.status_code == int(code)
    assert response.json["code"] == code
    db_session.rollback()  # a fresh snapshot: requests committed since
    assert db_session.get(Project, team["project_id"]).key_id is None
    assert db_session.scalar(sa.select(sa.func.count()).select_from(ProjectKey)) == 0


def test_analysts_tablets_and_strangers_cannot_turn_encryption_on(client, team, db_session):
    body = {"passphrase": PASSPHRASE}
    viewer = analyst(client, db_session, team)
    assert client.post(f"{team['base']}/key", json=body, headers=viewer).status_code == 403
    assert client.post(f"{team['base']}/key", json=body).status_code == 401
    assert client.post(f"{team['tablet']}/key", json=body).status_code == 403
    assert (
        client.post("/v1/projects/999/key", json=body, headers=team["manager"]).status_code == 404
    )
    db_session.rollback()  # a fresh snapshot: requests committed since
    assert db_session.get(Project, team["project_id"]).key_id is None


def test_the_passphrase_is_kept_nowhere(client, team, db_session, caplog):
    caplog.set_level("DEBUG")
    key_id = enable(client, team).json["keyId"]
    db_session.rollback()  # a fresh snapshot: requests committed since
    key = db_session.get(ProjectKey, key_id)
    assert PASSPHRASE not in str(key.private) and "PRIVATE" not in str(key.private)
    assert PASSPHRASE not in caplog.text
    audits = db_session.execute(sa.text("SELECT details FROM audit_events")).scalars().all()
    assert all(PASSPHRASE not in str(details) for details in audits)


# ---- self-managed keys ------------------------------------------------------------------------


def test_a_self_managed_form_is_decrypted_with_the_private_key_given_for_the_export(
    client, team, db_session
):
    pem, public = collect_crypto.generate_key_pair()
    form = publish(client, team, self_managed(public))
    _, version, served_key = download(client, team, "secret")
    assert served_key == public and version == "1"  # its own key: no suffix, no change
    key = db_session.get(ProjectKey, form["keyId"])
    assert key.public == public and not key.managed and key.private is None

    sent, xml, answer = encrypt_and_send(client, team, "secret")
    assert answer.status_code == 201
    version_row = stored(db_session, sent.instance_id)
    form_row = the_form(db_session, team, "secret")
    record = decryptor(db_session, form_row, private_key_pem=pem)(version_row)
    assert record.xml == xml and record.media[0].read() == PHOTO and record.signature_valid

    # Without the key nothing is decrypted; with another key the export is refused at once.
    assert decryptor(db_session, form_row)(version_row) is None
    other_pem, _ = collect_crypto.generate_key_pair()
    with pytest.raises(errors.Undecryptable):
        decryptor(db_session, form_row, private_key_pem=other_pem)
    with pytest.raises(errors.Undecryptable):
        decryptor(db_session, form_row, private_key_pem=b"-----BEGIN PRIVATE KEY-----\nnope\n")

    listed = client.get(f"{team['base']}/forms/secret/submissions/keys", headers=team["manager"])
    assert [(k["id"], k["managed"], k["hint"], k["public"]) for k in listed.json] == [
        (key.id, False, None, public)
    ]


def test_a_self_managed_form_keeps_its_own_key_when_the_project_turns_managed_on(
    client, team, db_session
):
    pem, public = collect_crypto.generate_key_pair()
    publish(client, team, self_managed(public))
    enable(client, team)
    _, version, served_key = download(client, team, "secret")
    assert served_key == public and version == "1"
    sent, xml, _ = encrypt_and_send(client, team, "secret")
    record = decryptor(db_session, the_form(db_session, team, "secret"), private_key_pem=pem)(
        stored(db_session, sent.instance_id)
    )
    assert record.xml == xml
