"""Decrypting a form's stored records for one export: the keys supplied, the records as stored.

Exports call :func:`decryptor` once, with what the user typed for that export (passphrases of
managed keys, or the private key of a self-managed form), then call what it returns once per
record version::

    decrypt = decryptor(db_session, form, passphrases={key_id: passphrase})
    for version in versions:                      # SubmissionVersion rows of the form
        record = decrypt(version)                 # DecryptedRecord, or None
        if record is None: ...                    # not encrypted, no key given, or incomplete
        record.xml                                # the plaintext submission.xml (bytes)
        for media in record.media: media.name, media.chunks()

Contract (stable; exports rely on it):

* keys are checked when the decryptor is made: a wrong passphrase or a private key that
  belongs to none of the form's keys raises :class:`~server.errors.Undecryptable` (400.12)
  before anything is streamed;
* the returned function gives None for a version that is not encrypted, whose key was not
  supplied, or whose encrypted XML has not arrived yet (a split upload still in progress);
* it raises Undecryptable for a record whose data will not decrypt with the right key (altered
  or truncated files); exports catch it per record and mark the row;
* a signature that does not match is reported in ``record.signature``, not raised;
* media are read lazily from the blob store, chunk by chunk; with ``verify_signature`` (the
  default) each media file is also read once, when the record is decrypted, to check the
  signature (an export that needs only the values may pass ``verify_signature=False``: media
  are then not read at all, and ``record.signature`` is "unchecked");
* the version may be a ``SubmissionVersion`` or any object with its attributes ``id``,
  ``form_version_id``, ``instance_id``, ``xml``, ``encrypted``, ``encrypted_key``,
  ``encrypted_signature`` and ``encrypted_xml_name``.

Private keys live only inside the returned function, for the life of the export; the supplied
PEM and passphrases are never stored, logged or put into an error. Call it inside an
application context (the blob store is the application's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.orm import Session

from server import errors
from server.crypto import keys
from server.crypto.records import DecryptedRecord, decrypt_record
from server.forms.models import Form, FormVersion
from server.projects.models import Project, ProjectKey
from server.storage import services as storage
from server.storage.models import Blob
from server.submissions import parsing
from server.submissions.models import SubmissionAttachment, SubmissionVersion

Decryptor = Callable[[SubmissionVersion], DecryptedRecord | None]


def form_keys(db_session: Session, form: Form) -> list[ProjectKey]:
    """Return the keys the form's versions carry, oldest first."""
    return _keys_of(db_session, sa.select(FormVersion.key_id).where(FormVersion.form_id == form.id))


def record_keys(db_session: Session, form: Form) -> list[ProjectKey]:
    """Return the keys the form's published (not draft) records are encrypted with, oldest first."""
    used = (
        sa.select(FormVersion.key_id)
        .join(SubmissionVersion, SubmissionVersion.form_version_id == FormVersion.id)
        .where(
            FormVersion.form_id == form.id,
            SubmissionVersion.encrypted.is_(True),
            SubmissionVersion.draft.is_(False),
        )
    )
    return _keys_of(db_session, used)


def _keys_of(db_session: Session, versions: sa.Select) -> list[ProjectKey]:
    """Return the keys named by ``versions`` (a select of FormVersion.key_id), oldest first."""
    key_ids = versions.where(FormVersion.key_id.is_not(None))
    return list(
        db_session.scalars(
            sa.select(ProjectKey).where(ProjectKey.id.in_(key_ids)).order_by(ProjectKey.id)
        )
    )


def _version_publics(db_session: Session, form: Form) -> dict[int, tuple[int | None, str | None]]:
    """Return form version id -> (key id, public key text) for every version of the form."""
    rows = db_session.execute(
        sa.select(FormVersion.id, FormVersion.key_id, FormVersion.schema).where(
            FormVersion.form_id == form.id
        )
    ).all()
    publics: dict[int, tuple[int | None, str | None]] = {}
    for version_id, key_id, schema in rows:
        public = (schema or {}).get("publicKey")
        try:
            public = keys.normalise_public(public) if public else None
        except ValueError:
            public = None
        publics[version_id] = (key_id, public)
    return publics


def decryptor(
    db_session: Session,
    form: Form,
    *,
    private_key_pem: bytes | None = None,
    passphrases: dict[int, str] | None = None,
    verify_signature: bool = True,
) -> Decryptor:
    """Return a function that decrypts one stored record version of ``form`` (see above).

    ``passphrases`` maps managed key ids (``ProjectKey.id``) to passphrases; ``private_key_pem``
    is the private key of a self-managed form, for this export only. Raises Undecryptable
    when a passphrase is wrong or the private key fits none of the form's keys.
    """
    catalogue = {key.id: key for key in form_keys(db_session, form)}
    # The project's managed key too: a passphrase typed for it must be checked even before
    # any version of this form carries it.
    project = db_session.get(Project, form.project_id)
    if project is not None and project.key_id is not None and project.key_id not in catalogue:
        managed = db_session.get(ProjectKey, project.key_id)
        if managed is not None:
            catalogue[managed.id] = managed

    by_key_id: dict[int, rsa.RSAPrivateKey] = {}
    by_public: dict[str, rsa.RSAPrivateKey] = {}
    for key_id, passphrase in (passphrases or {}).items():
        key = catalogue.get(_int(key_id))
        if key is None or not key.managed:
            continue  # Central ignores passphrases for keys the form does not use
        private = keys.unlock(key, passphrase)
        by_key_id[key.id] = private
        by_public[key.public] = private

    publics = _version_publics(db_session, form)
    if private_key_pem is not None:
        private = keys.load_private_key(private_key_pem)
        public = keys.public_key_b64(private.public_key())
        known = {key.public for key in catalogue.values()}
        known |= {public for _, public in publics.values() if public}
        if public not in known:
            raise errors.Undecryptable()
        by_public[public] = private
        for key in catalogue.values():
            if key.public == public:
                by_key_id[key.id] = private

    def private_for(form_version_id: int) -> rsa.RSAPrivateKey | None:
        key_id, public = publics.get(form_version_id, (None, None))
        if key_id is not None and key_id in by_key_id:
            return by_key_id[key_id]
        if key_id is not None and key_id in catalogue:
            return by_public.get(catalogue[key_id].public)
        if public is not None:
            return by_public.get(public)
        return None

    def decrypt(version: SubmissionVersion) -> DecryptedRecord | None:
        if not version.encrypted or not version.encrypted_key:
            return None
        private = private_for(version.form_version_id)
        if private is None:
            return None
        return _decrypt_version(db_session, version, private, verify_signature=verify_signature)

    return decrypt


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _reader(blob: Blob) -> Callable[[], Iterable[bytes]]:
    return lambda: storage.read(blob)


def _decrypt_version(
    db_session: Session,
    version: SubmissionVersion,
    private: rsa.RSAPrivateKey,
    *,
    verify_signature: bool,
) -> DecryptedRecord | None:
    """Decrypt one stored version: its envelope as received, its ``.enc`` attachments."""
    envelope = parsing.read_submission(version.raw_xml.encode("utf-8"))
    rows = db_session.execute(
        sa.select(SubmissionAttachment, Blob)
        .outerjoin(Blob, Blob.id == SubmissionAttachment.blob_id)
        .where(
            SubmissionAttachment.submission_version_id == version.id,
            SubmissionAttachment.encryption_index.is_not(None),
        )
        .order_by(SubmissionAttachment.encryption_index)
    ).all()
    by_name = {attachment.name: blob for attachment, blob in rows}
    xml_name = version.encrypted_xml_name or envelope.encrypted_xml_name
    # §6 step 3: media in the manifest's order, then the XML. Intake stored that order as
    # encryption_index; the envelope says it too, and both must agree.
    media_names = [a.name for a, _ in rows if a.name != xml_name]
    if media_names != [n for n in envelope.encrypted_media if n != xml_name]:
        raise errors.Undecryptable()
    if not xml_name or by_name.get(xml_name) is None:
        return None  # the record's XML has not arrived yet
    files = [
        (name, _reader(by_name[name]) if by_name.get(name) is not None else None)
        for name in media_names
    ]
    files.append((xml_name, _reader(by_name[xml_name])))
    return decrypt_record(
        private,
        version.instance_id,
        version.encrypted_key or "",
        files,
        form_id=envelope.form_id,
        # The signature has a version line only when the envelope has a version attribute.
        version=envelope.root.get("version"),
        signature_b64=version.encrypted_signature,
        verify_signature=verify_signature,
    )
