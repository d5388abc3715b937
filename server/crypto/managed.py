"""Managed encryption of a project: its key pair, and its public key in the project's forms.

Turning it on (:func:`create_managed_key`, behind ``POST /v1/projects/<id>/key``) does what
ODK Central does:

1. a key pair is generated; the private half is stored under the manager's passphrase
   (:mod:`server.crypto.keys`) and the project points at the key (``Project.key_id``);
2. every form of the project gets a new published version carrying the public key, with the
   version suffix of :func:`server.crypto.xforms.version_suffix`, so that tablets download it
   at their next update and encrypt every record from then on; drafts get the key in place;
3. from then on each publish puts the key into the new version (:func:`prepare_for_publish`,
   called by :func:`server.forms.services._publish`).

A form that carries its own public key (XLSForm ``settings.public_key``: self-managed) keeps it;
its key is catalogued as an unmanaged ``ProjectKey`` so that records can name it.

Records already received stay as they are (unencrypted ones stay readable); versions published
before stay valid for records filled on them. Managed encryption cannot be turned off, as in
Central: a passphrase forgotten means the records are lost, which is the point.
"""

from __future__ import annotations

import hashlib
import logging

import sqlalchemy as sa
from flask_babel import gettext
from sqlalchemy.orm import Session

from server import errors
from server.audit.services import record
from server.crypto import keys
from server.crypto.xforms import inject_public_key, public_key_of, version_suffix
from server.db import utcnow
from server.forms import xform
from server.forms.models import Form, FormAttachment, FormVersion
from server.projects.models import Project, ProjectKey

log = logging.getLogger(__name__)

MAX_VERSION = 255


def _lock_project(db_session: Session, project_id: int, *, share: bool) -> Project | None:
    """Read the project, locking its row on PostgreSQL (SQLite: the write lock is held)."""
    query = sa.select(Project).where(Project.id == project_id)
    if db_session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(read=share)
    return db_session.execute(query).scalar_one_or_none()


def create_managed_key(
    db_session: Session,
    project: Project,
    passphrase: str,
    hint: str | None = None,
    *,
    actor_id: int | None = None,
) -> ProjectKey:
    """Turn on managed encryption for a project; return its new key. Commits.

    Raises 400.2 without a passphrase, 400.21 when shorter than 10 characters, 409.4 when the
    project already has a key. The passphrase is used to seal the private key and forgotten.
    """
    if project.key_id is not None:  # checked first, as Central does
        raise errors.EncryptionAlreadyActive(feature="managed encryption")
    passphrase = keys.check_passphrase(passphrase)
    if hint is not None and not isinstance(hint, str):
        raise errors.UnexpectedValue(field="hint", reason=gettext("expected text"))
    hint = (hint or "").strip()[: keys.MAX_HINT] or None
    project_id = project.id
    # Generating and sealing take about half a second (scrypt): outside any transaction, so
    # that on SQLite no other writer waits for it.
    db_session.commit()
    private_key = keys.generate()
    public = keys.public_key_b64(private_key.public_key())
    sealed = keys.seal_private_key(private_key, passphrase)
    del private_key, passphrase
    try:
        locked = _lock_project(db_session, project_id, share=False)
        if locked is None or locked.deleted_at is not None:
            raise errors.NotFound()
        if locked.key_id is not None:  # another manager was quicker
            raise errors.EncryptionAlreadyActive(feature="managed encryption")
        key = ProjectKey(public=public, private=sealed, managed=True, hint=hint)
        db_session.add(key)
        db_session.flush()
        locked.key_id = key.id
        encrypt_project_forms(db_session, locked, key, actor_id=actor_id)
        record(
            db_session,
            "project.update",
            actor_id=actor_id,
            project_id=project_id,
            details={"encrypted": True, "keyId": key.id},
        )
        db_session.commit()
    except BaseException:
        db_session.rollback()
        raise
    log.info("managed encryption turned on", extra={"fields": {"project_id": project_id}})
    return key


def ensure_key(db_session: Session, public_b64: str) -> ProjectKey:
    """Return the catalogued key with this public key, adding an unmanaged one if new."""
    public = keys.normalise_public(public_b64)
    found = (
        db_session.execute(
            sa.select(ProjectKey).where(ProjectKey.public == public).order_by(ProjectKey.id)
        )
        .scalars()
        .first()
    )
    if found is not None:
        return found
    key = ProjectKey(public=public, private=None, managed=False)
    db_session.add(key)
    db_session.flush()
    return key


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _apply_key(version: FormVersion, key: ProjectKey, suffix: str) -> None:
    """Put the key into a version's XForm and suffix its version (hashes and schema follow)."""
    new_version = f"{version.version}{suffix}"
    if len(new_version) > MAX_VERSION:
        raise errors.UnexpectedValue(
            field="version",
            reason=gettext(
                "at most %(maximum)s characters in an encrypted form",
                maximum=MAX_VERSION - len(suffix),
            ),
        )
    try:
        text = xform.set_version(inject_public_key(version.xml, key.public), new_version)
    except (xform.XFormError, ValueError) as exc:
        raise errors.UnexpectedValue(field="form", reason=str(exc)) from None
    version.xml = text
    version.version = new_version
    version.hash = _md5(text)
    version.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    # A new dict: JSON columns only notice reassignment.
    version.schema = {**version.schema, "version": new_version, "publicKey": key.public}
    version.key_id = key.id


def _own_key(version: FormVersion) -> str | None:
    try:
        return public_key_of(version.xml)
    except xform.XFormError:
        return None


def prepare_for_publish(db_session: Session, form: Form, version: FormVersion) -> None:
    """Make a version about to be published carry the key its records will be encrypted with.

    A form with its own public key keeps it (catalogued as a key); otherwise the project's
    managed key, if any, is injected with a version suffix. Sets ``version.key_id`` and
    ``form.key_id``. Flushes, never commits.
    """
    project = _lock_project(db_session, form.project_id, share=True)
    own = _own_key(version)
    if own is not None:
        try:
            key = ensure_key(db_session, own)
        except ValueError:
            raise errors.UnexpectedValue(
                field="base64RsaPublicKey",
                reason=gettext("the form's public key is not a base64 DER RSA public key"),
            ) from None
        version.key_id = key.id
    elif project is not None and project.key_id is not None:
        managed = db_session.get(ProjectKey, project.key_id)
        if managed is not None:
            _apply_key(version, managed, version_suffix())
    form.key_id = version.key_id
    db_session.flush()


def _copy_published(
    db_session: Session, form: Form, source: FormVersion, key: ProjectKey, suffix: str
) -> FormVersion:
    """Publish a copy of ``source`` carrying the key, with the same media."""
    copy = FormVersion(
        form_id=form.id,
        version=source.version,
        title=source.title,
        xml=source.xml,
        hash=source.hash,
        source_hash=source.source_hash or source.hash,
        sha256=source.sha256,
        schema=dict(source.schema),
        xls_blob_id=source.xls_blob_id,
        xls_filename=source.xls_filename,
        xls_content_type=source.xls_content_type,
        validation=source.validation,
        validation_messages=list(source.validation_messages or []),
        warnings=list(source.warnings or []),
        enketo_id=source.enketo_id,
        created_by=source.created_by,
    )
    _apply_key(copy, key, suffix)
    copy.published_at = utcnow()
    db_session.add(copy)
    db_session.flush()
    for attachment in db_session.scalars(
        sa.select(FormAttachment).where(FormAttachment.form_version_id == source.id)
    ):
        db_session.add(
            FormAttachment(
                form_id=form.id,
                form_version_id=copy.id,
                name=attachment.name,
                type=attachment.type,
                blob_id=attachment.blob_id,
                content_type=attachment.content_type,
                dataset_id=attachment.dataset_id,
                updated_at=attachment.updated_at,
            )
        )
    db_session.flush()
    return copy


def encrypt_project_forms(
    db_session: Session, project: Project, key: ProjectKey, *, actor_id: int | None = None
) -> None:
    """Give every live form of the project its managed key (step 2 of the module docstring)."""
    suffix = version_suffix()
    forms = db_session.scalars(
        sa.select(Form)
        .where(Form.project_id == project.id, Form.deleted_at.is_(None))
        .order_by(Form.id)
    ).all()
    for form in forms:
        if form.current_version_id is not None:
            current = db_session.get(FormVersion, form.current_version_id)
            if current is not None and _own_key(current) is None:
                published = _copy_published(db_session, form, current, key, suffix)
                form.current_version_id = published.id
                form.key_id = key.id
                form.updated_at = utcnow()
                record(
                    db_session,
                    "form.update.publish",
                    actor_id=actor_id,
                    project_id=project.id,
                    form_id=form.id,
                    details={
                        "version": published.version,
                        "hash": published.hash,
                        "encrypted": True,
                    },
                )
        if form.draft_version_id is not None:
            draft = db_session.get(FormVersion, form.draft_version_id)
            if draft is not None and _own_key(draft) is None:
                _apply_key(draft, key, suffix)
    db_session.flush()
