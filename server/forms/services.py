"""The life of a form: upload, draft, publish, versions, states and media.

Services take a SQLAlchemy session first, never see the HTTP request, raise
:mod:`server.errors` problems and commit where their change must be durable. Rules (ODK
Central's, and openrosa.md §8.17):

* an upload creates a form with a **draft**; ``publish=True`` publishes it at once;
* one draft per form; a new draft replaces the previous one (its test records go with it);
  without an upload, a new draft is a copy of the published version;
* publishing makes the draft the version tablets receive. A formID + version published once
  is that XForm forever: publishing different XML (or different media) under a version
  already published is refused (409.6); publishing byte-identical content again is harmless
  and answers the existing version;
* publishing is refused (409.21) while a media file the XForm references is missing;
* an XLSForm with warnings needs ``ignore_warnings`` (400.16), as in Central;
* every published version keeps its XForm text (served unchanged, ``hash`` = its MD5), its
  source spreadsheet, its field schema and its media; records filled on any of them are
  accepted (:func:`version_for_submission`);
* states: ``open``; ``closing`` (hidden from Collect's form list, still accepting records);
  ``closed`` (neither).

Compiling can take seconds (pyxform, then ODK Validate in Java): it runs after the read
transaction has ended, so that on SQLite no other writer waits for it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import mimetypes
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

import sqlalchemy as sa
from flask import current_app, has_app_context
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import errors
from server.audit.services import record
from server.auth.models import Assignment
from server.auth.tokens import new_token
from server.crypto.managed import prepare_for_publish
from server.db import utcnow
from server.entities import listfile
from server.entities import services as entity_lists
from server.entities.models import Dataset
from server.forms import compiler, schema, xform
from server.forms.messages import _
from server.forms.models import FORM_STATES, Form, FormAttachment, FormVersion
from server.projects.models import Project
from server.storage import services as storage
from server.storage.models import Blob
from server.submissions.models import Submission

log = logging.getLogger(__name__)

# Media files a form may have: images, audio, video, CSV and other data files.
MAX_MEDIA_BYTES = 100_000_000
# Choice files read back from storage to fill the schema's lists (select_one_from_file).
MAX_CHOICE_FILE_BYTES = 20_000_000


@dataclass
class Upload:
    """A form file as received: its bytes, and what the sender said it is."""

    data: bytes
    filename: str | None = None
    content_type: str | None = None
    # Fields known to be personal beyond what the file says (an XForm carries no pii column).
    pii: frozenset[str] = frozenset()


# ---- lookups (intake, exports and the API call these) ----------------------------------------


def find_form(db_session: Session, project_id: int, xml_form_id: str) -> Form | None:
    """Return the live form with this formID in the project."""
    return db_session.execute(
        sa.select(Form).where(
            Form.project_id == project_id,
            Form.xml_form_id == xml_form_id,
            Form.deleted_at.is_(None),
        )
    ).scalar_one_or_none()


def get_form(
    db_session: Session, project_id: int, xml_form_id: str, *, draft: bool = False
) -> Form:
    """Return the live form with this formID in the project; 404 when there is none (or, for
    a draft's routes, when it has no draft)."""
    form = find_form(db_session, project_id, xml_form_id)
    if form is None or (draft and form.draft_version_id is None):
        raise errors.NotFound()
    return form


def list_forms(db_session: Session, project_id: int) -> list[Form]:
    """Return the project's live forms, by formID."""
    return list(
        db_session.scalars(
            sa.select(Form)
            .where(Form.project_id == project_id, Form.deleted_at.is_(None))
            .order_by(Form.xml_form_id)
        )
    )


def current_version(db_session: Session, form: Form) -> FormVersion | None:
    """Return the published version tablets receive, if any."""
    if form.current_version_id is None:
        return None
    return db_session.get(FormVersion, form.current_version_id)


def titles(db_session: Session, listed: Iterable[Form]) -> dict[int, str]:
    """Return each form's title as people read it: the published version's, else the draft's,
    else its formID (a form whose settings sheet names no title)."""
    listed = list(listed)
    wanted = {v for f in listed for v in (f.current_version_id, f.draft_version_id) if v}
    found = (
        dict(
            db_session.execute(
                sa.select(FormVersion.id, FormVersion.title).where(FormVersion.id.in_(wanted))
            ).all()
        )
        if wanted
        else {}
    )
    return {
        f.id: found.get(f.current_version_id) or found.get(f.draft_version_id) or f.xml_form_id
        for f in listed
    }


def published_version(db_session: Session, form: Form) -> FormVersion:
    """Return the published version tablets receive; 404 for a form never published."""
    version = current_version(db_session, form)
    if version is None:
        raise errors.NotFound()
    return version


def draft_version(db_session: Session, form: Form) -> FormVersion | None:
    """Return the form's draft, if any."""
    if form.draft_version_id is None:
        return None
    return db_session.get(FormVersion, form.draft_version_id)


def version_for_submission(
    db_session: Session, form: Form, version: str, *, draft: bool
) -> FormVersion | None:
    """Return the version a record says it was filled on: the draft, or any published one.

    Records filled on an older published version are still accepted: tablets keep old forms
    until they next update.
    """
    if draft:
        candidate = draft_version(db_session, form)
        return candidate if candidate is not None and candidate.version == version else None
    return db_session.execute(
        sa.select(FormVersion).where(
            FormVersion.form_id == form.id,
            FormVersion.version == version,
            FormVersion.published_at.is_not(None),
        )
    ).scalar_one_or_none()


def published_versions(db_session: Session, form: Form) -> list[FormVersion]:
    """Return every published version of the form, newest first."""
    return list(
        db_session.scalars(
            sa.select(FormVersion)
            .where(FormVersion.form_id == form.id, FormVersion.published_at.is_not(None))
            .order_by(FormVersion.published_at.desc(), FormVersion.id.desc())
        )
    )


def attachments(
    db_session: Session, version: FormVersion
) -> list[tuple[FormAttachment, Blob | None]]:
    """Return a version's media files, by name, with their blobs (None while missing)."""
    rows = db_session.execute(_media(version).order_by(FormAttachment.name)).all()
    return [(attachment, blob) for attachment, blob in rows]


def _media(version: FormVersion) -> sa.Select:
    return (
        sa.select(FormAttachment, Blob)
        .outerjoin(Blob, Blob.id == FormAttachment.blob_id)
        .where(FormAttachment.form_version_id == version.id)
    )


def find_attachment(
    db_session: Session, version: FormVersion, name: str
) -> tuple[FormAttachment, Blob | None] | None:
    """Return one media file of a version by name, with its blob (None while missing)."""
    found = db_session.execute(_media(version).where(FormAttachment.name == name)).first()
    return (found[0], found[1]) if found is not None else None


@dataclass
class ManifestFile:
    """One file of a version's manifest: a media file, or an entity list made on demand."""

    attachment: FormAttachment
    md5: str
    type: str | None = None  # "entityList" or "approvalEntityList" for a list
    dataset: Dataset | None = None


def manifest_files(db_session: Session, version: FormVersion) -> list[ManifestFile]:
    """Return what a version's manifest lists: present media, and linked entity lists."""
    rows = db_session.execute(
        _media(version)
        .add_columns(Dataset)
        .outerjoin(Dataset, Dataset.id == FormAttachment.dataset_id)
        .order_by(FormAttachment.name)
    ).all()
    files = []
    for attachment, blob, dataset in rows:
        if dataset is not None:
            md5, _size = listfile.fingerprint(db_session, dataset)
            files.append(ManifestFile(attachment, md5, listfile.media_type(dataset), dataset))
        elif blob is not None:
            files.append(ManifestFile(attachment, blob.md5))
    return files


def forms_reading_list(db_session: Session, dataset: Dataset) -> list[Form]:
    """Return the forms whose published version or draft has a file made from this list."""
    linked = (
        sa.select(FormAttachment.form_id)
        .join(Form, Form.id == FormAttachment.form_id)
        .where(
            FormAttachment.dataset_id == dataset.id,
            sa.or_(
                FormAttachment.form_version_id == Form.current_version_id,
                FormAttachment.form_version_id == Form.draft_version_id,
            ),
        )
    )
    return list(
        db_session.scalars(
            sa.select(Form).where(Form.id.in_(linked), Form.deleted_at.is_(None)).order_by(Form.id)
        )
    )


def linked_list(db_session: Session, attachment: FormAttachment) -> Dataset | None:
    """Return the entity list a media file is made from, if it is linked to one."""
    if attachment.dataset_id is None:
        return None
    return db_session.get(Dataset, attachment.dataset_id)


def versions_with_media(db_session: Session, version_ids: list[int]) -> set[int]:
    """Return which of these versions have media files (present or not): those get a manifest."""
    if not version_ids:
        return set()
    return set(
        db_session.scalars(
            sa.select(FormAttachment.form_version_id)
            .where(FormAttachment.form_version_id.in_(version_ids))
            .distinct()
        )
    )


def open_forms(
    db_session: Session,
    project_id: int,
    *,
    xml_form_id: str | None = None,
    assigned_to: int | None = None,
) -> list[tuple[Form, FormVersion]]:
    """Return the forms tablets may download, with their published versions, by formID.

    Only open forms are listed (closing and closed ones are hidden from Collect); with
    ``assigned_to``, only the forms that actor (an app user) holds a role on.
    """
    query = (
        sa.select(Form, FormVersion)
        .join(FormVersion, FormVersion.id == Form.current_version_id)
        .where(Form.project_id == project_id, Form.deleted_at.is_(None), Form.state == "open")
        .order_by(Form.xml_form_id)
    )
    if xml_form_id:
        query = query.where(Form.xml_form_id == xml_form_id)
    if assigned_to is not None:
        query = query.where(
            Form.id.in_(sa.select(Assignment.form_id).where(Assignment.actor_id == assigned_to))
        )
    return [(form, version) for form, version in db_session.execute(query)]


def missing_media(db_session: Session, version: FormVersion) -> list[str]:
    """Return the names of the media files the version references and does not have yet.

    A file linked to an entity list is never missing: the server makes it from the list.
    """
    return [
        a.name
        for a, blob in attachments(db_session, version)
        if blob is None and a.dataset_id is None
    ]


def link_entity_lists(db_session: Session, form: Form, version: FormVersion) -> None:
    """Link each ``<list>.csv`` the version references to the project's list of that name.

    Only files for which nothing was uploaded are linked (an uploaded CSV is the coordinator's
    choice, as in Central); ``itemsets.csv`` never is. Flushed, not committed.
    """
    names = schema.entity_lists_used(version.schema)
    found = entity_lists.find_datasets(db_session, form.project_id, names)
    if not found:
        return
    for attachment, blob in attachments(db_session, version):
        dataset = found.get(attachment.name[:-4]) if attachment.name.endswith(".csv") else None
        if dataset is not None and blob is None and attachment.dataset_id is None:
            attachment.dataset_id = dataset.id
            attachment.updated_at = utcnow()
    db_session.flush()


def source_file(db_session: Session, version: FormVersion) -> tuple[Blob, str, str] | None:
    """Return the spreadsheet a version was compiled from: blob, file name, content type."""
    if version.xls_blob_id is None:
        return None
    blob = db_session.get(Blob, version.xls_blob_id)
    if blob is None:
        return None
    filename = version.xls_filename or "form.xlsx"
    content_type = version.xls_content_type or (
        mimetypes.guess_type(filename)[0] or "application/octet-stream"
    )
    return blob, filename, content_type


def xml_bytes(version: FormVersion) -> bytes:
    """Return the exact bytes served for a version (its ``hash`` is their MD5)."""
    return version.xml.encode("utf-8")


# ---- creating forms and drafts ---------------------------------------------------------------


def _validate_default(validate: bool | None) -> bool:
    if validate is not None:
        return validate
    return bool(has_app_context() and current_app.config.get("ODK_VALIDATE"))


def _compile(
    upload: Upload, *, fallback: str | None, validate: bool | None
) -> compiler.CompiledForm:
    return compiler.compile_upload(
        upload.data,
        filename=upload.filename,
        content_type=upload.content_type,
        form_id_fallback=fallback,
        validate=_validate_default(validate),
    )


def _check_warnings(compiled: compiler.CompiledForm, ignore_warnings: bool) -> None:
    if compiled.warnings and not ignore_warnings:
        raise errors.FormWarnings(
            filename=compiled.filename,
            warnings=[w.to_json() for w in compiled.warnings],
        )


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _store_files(
    db_session: Session,
    upload: Upload | None,
    compiled: compiler.CompiledForm | None,
    media: Mapping[str, bytes] | None,
) -> tuple[Blob | None, dict[str, Blob]]:
    """Make the source spreadsheet and given media durable before any row refers to them.

    Each catalogue row is committed at once: the database lock (SQLite's single writer) is
    never held while bytes travel to the store. A blob no version ends up using is harmless.
    """
    files = dict(media or {})
    if compiled is not None and compiled.itemsets is not None:
        files.setdefault("itemsets.csv", compiled.itemsets)
    for data in files.values():
        if len(data) > MAX_MEDIA_BYTES:
            raise errors.PayloadTooLarge(size=len(data), limit=MAX_MEDIA_BYTES)
    source = None
    if upload is not None and compiled is not None and compiled.from_spreadsheet:
        source = storage.save_stream(db_session, io.BytesIO(upload.data))
        db_session.commit()
    stored = {}
    for name, data in files.items():
        stored[name] = storage.save_stream(db_session, io.BytesIO(data))
        db_session.commit()
    return source, stored


def _content_type(name: str, declared: str | None = None) -> str:
    if declared and declared != "application/octet-stream":
        return declared.split(";", 1)[0].strip()
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _new_version(
    db_session: Session,
    form: Form,
    compiled: compiler.CompiledForm,
    upload: Upload,
    *,
    source: Blob | None,
    actor_id: int | None,
    token: str | None,
) -> FormVersion:
    """Add a draft version for a compiled upload (flushed, not committed)."""
    filename = upload.filename or f"{compiled.form_id}{compiled.file_type}"
    version = FormVersion(
        form_id=form.id,
        version=compiled.version,
        title=compiled.title or None,
        xml=compiled.xml,
        hash=_md5(compiled.xml),
        source_hash=_md5(compiled.xml),
        sha256=_sha256(compiled.xml),
        schema=schema.extract(compiled.xml, pii=compiled.pii | upload.pii),
        xls_blob_id=source.id if source is not None else None,
        xls_filename=filename if source is not None else None,
        xls_content_type=_content_type(filename, upload.content_type)
        if source is not None
        else None,
        validation=compiled.validation.verdict,
        validation_messages=list(compiled.validation.messages),
        warnings=[w.to_json() for w in compiled.warnings],
        draft_token=token or new_token(),
        created_by=actor_id,
    )
    db_session.add(version)
    db_session.flush()
    return version


def _carry_candidates(db_session: Session, form: Form) -> list[FormVersion]:
    """Versions whose media a new draft inherits by name: the old draft, then the current."""
    candidates = []
    for version in (draft_version(db_session, form), current_version(db_session, form)):
        if version is not None:
            candidates.append(version)
    return candidates


def _attach_media(
    db_session: Session,
    form: Form,
    version: FormVersion,
    *,
    previous: list[FormVersion],
    stored: Mapping[str, Blob],
) -> None:
    """Create the version's attachment rows: given files, carried-forward ones, or missing."""
    inherited: dict[str, FormAttachment] = {}
    for old in previous:
        for attachment, blob in attachments(db_session, old):
            if blob is not None:
                inherited.setdefault(attachment.name, attachment)
    now = utcnow()
    for entry in version.form_schema.media:
        name = entry.name
        row = FormAttachment(
            form_id=form.id, form_version_id=version.id, name=name, type=entry.type
        )
        if name in stored:
            row.blob_id = stored[name].id
            row.content_type = _content_type(name)
            row.updated_at = now
        elif name in inherited:
            row.blob_id = inherited[name].blob_id
            row.content_type = inherited[name].content_type
            row.dataset_id = inherited[name].dataset_id
            row.updated_at = inherited[name].updated_at
        db_session.add(row)
    db_session.flush()
    link_entity_lists(db_session, form, version)
    _refresh_choices(db_session, version)


def _refresh_choices(db_session: Session, version: FormVersion) -> None:
    """Recompute the schema's file-based choice lists from the attached files."""
    wanted = set(version.form_schema.file_choice_files)
    if not wanted:
        return
    files: dict[str, bytes] = {}
    for attachment, blob in attachments(db_session, version):
        if attachment.name in wanted and blob is not None and blob.size <= MAX_CHOICE_FILE_BYTES:
            try:
                files[attachment.name] = storage.read_all(blob)
            except Exception:  # a store outage must not block the upload; lists stay empty
                log.warning("could not read %s to fill its choices", attachment.name, exc_info=True)
    # A new dict: JSON columns only notice reassignment, not mutation.
    version.schema = schema.extract(version.xml, pii=version.form_schema.pii_paths, files=files)


def _discard_draft(db_session: Session, form: Form, draft: FormVersion) -> None:
    """Remove a draft and the test records sent to it."""
    db_session.execute(
        sa.delete(Submission).where(Submission.form_id == form.id, Submission.draft.is_(True))
    )
    form.draft_version_id = None
    db_session.flush()
    db_session.delete(draft)
    db_session.flush()


def _conflict_for(project_id: int, form_id: str) -> errors.Conflict:
    return errors.Conflict(fields="projectId, xmlFormId", values=f"{project_id}, {form_id}")


def create_form(
    db_session: Session,
    project_id: int,
    upload: Upload,
    *,
    actor_id: int | None = None,
    publish: bool = False,
    allow_missing_media: bool = False,
    ignore_warnings: bool = False,
    form_id_fallback: str | None = None,
    validate: bool | None = None,
    media: Mapping[str, bytes] | None = None,
) -> Form:
    """Create a form from an uploaded XLSForm or XForm, as a draft unless ``publish``.

    ``form_id_fallback`` is the formID when the settings sheet has none (Central's
    ``X-XlsForm-FormId-Fallback``). ``media`` gives files the form references, by name;
    ``allow_missing_media`` as for :func:`publish_draft`.
    Uploading content identical to the form's published version returns the form unchanged;
    anything else under an existing formID is 409.3 (upload a new draft instead). Commits.
    """
    project = db_session.get(Project, project_id)
    if project is None:
        raise errors.NotFound()
    db_session.commit()  # end the read transaction: compiling takes a while
    compiled = _compile(upload, fallback=form_id_fallback, validate=validate)
    _check_warnings(compiled, ignore_warnings)
    source, stored = _store_files(db_session, upload, compiled, media)
    existing = db_session.execute(
        sa.select(Form).where(Form.project_id == project_id, Form.xml_form_id == compiled.form_id)
    ).scalar_one_or_none()
    if existing is not None:
        current = current_version(db_session, existing)
        if (
            existing.deleted_at is None
            and current is not None
            and current.hash == _md5(compiled.xml)
        ):
            return existing
        raise _conflict_for(project_id, compiled.form_id)
    try:
        form = Form(
            project_id=project_id, xml_form_id=compiled.form_id, state="open", created_by=actor_id
        )
        db_session.add(form)
        db_session.flush()
        version = _new_version(
            db_session, form, compiled, upload, source=source, actor_id=actor_id, token=None
        )
        _attach_media(db_session, form, version, previous=[], stored=stored)
        form.draft_version_id = version.id
        record(
            db_session,
            "form.create",
            actor_id=actor_id,
            project_id=project_id,
            form_id=form.id,
            details={"xmlFormId": form.xml_form_id, "version": version.version},
        )
        if publish:
            _publish(
                db_session,
                form,
                version,
                actor_id=actor_id,
                allow_missing_media=allow_missing_media,
            )
        db_session.commit()
    except IntegrityError:
        db_session.rollback()
        raise _conflict_for(project_id, compiled.form_id) from None
    except BaseException:
        db_session.rollback()
        raise
    return form


def set_draft(
    db_session: Session,
    form: Form,
    upload: Upload | None = None,
    *,
    actor_id: int | None = None,
    ignore_warnings: bool = False,
    form_id_fallback: str | None = None,
    validate: bool | None = None,
    media: Mapping[str, bytes] | None = None,
) -> FormVersion:
    """Give a form a new draft: from an upload, or a copy of its published version.

    The draft keeps the previous draft's token (tablets testing it keep working), inherits
    media by name from the previous draft and the published version, and replaces the
    previous draft and its test records. The upload's formID must be the form's; a
    spreadsheet whose settings name none takes ``form_id_fallback`` (Central's
    ``X-XlsForm-FormId-Fallback``, as on creation), else the form's own. Commits.
    """
    current = current_version(db_session, form)
    if upload is None:
        if current is None:
            raise errors.NoPublishedVersion()
        compiled = None
    else:
        db_session.commit()  # end the read transaction: compiling takes a while
        compiled = _compile(
            upload, fallback=form_id_fallback or form.xml_form_id, validate=validate
        )
        if compiled.form_id != form.xml_form_id:
            raise errors.UnexpectedValue(
                field="formId",
                reason=_(
                    "the uploaded form's form_id is %(found)s, not %(expected)s",
                    found=compiled.form_id,
                    expected=form.xml_form_id,
                ),
            )
        _check_warnings(compiled, ignore_warnings)
    source, stored = _store_files(db_session, upload, compiled, media)
    try:
        old_draft = draft_version(db_session, form)
        # A copy takes the published version's media; an upload inherits the draft's first.
        previous = [current] if compiled is None else _carry_candidates(db_session, form)
        token = old_draft.draft_token if old_draft is not None else None
        if old_draft is not None:
            # The token moves to the new draft; the unique column must be free first.
            old_draft.draft_token = None
            db_session.flush()
        if compiled is None:
            assert current is not None
            version = _copy_version(db_session, form, current, actor_id=actor_id, token=token)
        else:
            version = _new_version(
                db_session, form, compiled, upload, source=source, actor_id=actor_id, token=token
            )
        _attach_media(db_session, form, version, previous=previous, stored=stored)
        if old_draft is not None:
            _discard_draft(db_session, form, old_draft)
        form.draft_version_id = version.id
        form.updated_at = utcnow()
        record(
            db_session,
            "form.update.draft.set",
            actor_id=actor_id,
            project_id=form.project_id,
            form_id=form.id,
            details={"version": version.version, "copied": compiled is None},
        )
        db_session.commit()
    except BaseException:
        db_session.rollback()
        raise
    return version


def _copy_version(
    db_session: Session, form: Form, source: FormVersion, *, actor_id: int | None, token: str | None
) -> FormVersion:
    version = FormVersion(
        form_id=form.id,
        version=source.version,
        title=source.title,
        xml=source.xml,
        hash=source.hash,
        source_hash=source.source_hash,
        sha256=source.sha256,
        schema=dict(source.schema),
        xls_blob_id=source.xls_blob_id,
        xls_filename=source.xls_filename,
        xls_content_type=source.xls_content_type,
        validation=source.validation,
        validation_messages=list(source.validation_messages or []),
        warnings=list(source.warnings or []),
        key_id=source.key_id,
        draft_token=token or new_token(),
        created_by=actor_id,
    )
    db_session.add(version)
    db_session.flush()
    return version


# ---- publishing ------------------------------------------------------------------------------


def _media_map(db_session: Session, version: FormVersion) -> dict[str, int | None]:
    return {a.name: a.blob_id for a, _ in attachments(db_session, version)}


def _publish(
    db_session: Session,
    form: Form,
    draft: FormVersion,
    *,
    actor_id: int | None,
    allow_missing_media: bool = False,
) -> FormVersion:
    """Publish a draft (flushed, not committed); see :func:`publish_draft`."""
    blocks = draft.schema.get("entities") or []
    if blocks:
        # The lists and properties the form writes to exist from now on (audited).
        entity_lists.check_entities_version(draft.schema.get("entitiesVersion"))
        entity_lists.declare(
            db_session, form.project_id, blocks, actor_id=actor_id, form_id=form.xml_form_id
        )
    link_entity_lists(db_session, form, draft)
    missing = missing_media(db_session, draft)
    if missing and not allow_missing_media:
        raise errors.MissingMedia(missing=", ".join(missing), files=missing)
    # Encryption (server.crypto): a form with its own public key has the key catalogued;
    # otherwise the project's managed key, if any, goes into the XForm with a version suffix
    # (new text, new hash). Before the version check: the suffixed version is what is published.
    prepare_for_publish(db_session, form, draft)
    same = version_for_submission(db_session, form, draft.version, draft=False)
    if same is not None:
        if same.hash == draft.hash and _media_map(db_session, same) == _media_map(
            db_session, draft
        ):
            # The same XForm and media again: nothing new for tablets.
            _discard_draft(db_session, form, draft)
            return same
        raise errors.VersionConflict(form_id=form.xml_form_id, version=draft.version or '""')
    draft.published_at = utcnow()
    draft.draft_token = None
    form.current_version_id = draft.id
    form.draft_version_id = None
    form.updated_at = utcnow()
    # Test records belong to the draft (Central removes them on publish too).
    db_session.execute(
        sa.delete(Submission).where(Submission.form_id == form.id, Submission.draft.is_(True))
    )
    record(
        db_session,
        "form.update.publish",
        actor_id=actor_id,
        project_id=form.project_id,
        form_id=form.id,
        details={"version": draft.version, "hash": draft.hash}
        | ({"missingMedia": missing} if missing else {}),
    )
    db_session.flush()
    return draft


def publish_draft(
    db_session: Session,
    form: Form,
    *,
    version: str | None = None,
    actor_id: int | None = None,
    allow_missing_media: bool = False,
) -> FormVersion:
    """Publish the form's draft, optionally under a new ``version`` (rewritten in the XForm).

    Raises 404 without a draft, 409.6 when the version was already published with different
    content, and 409.21 while a referenced media file is missing unless
    ``allow_missing_media`` (as Central, which publishes anyway: the API passes it, the
    console only once the coordinator has confirmed; tablets are not offered the missing
    files, the audit event lists them). Publishing identical content again returns the
    existing version. Commits.
    """
    draft = draft_version(db_session, form)
    if draft is None:
        raise errors.NotFound()
    try:
        if version is not None and version != draft.version:
            _set_version(draft, version)
        published = _publish(
            db_session, form, draft, actor_id=actor_id, allow_missing_media=allow_missing_media
        )
        db_session.commit()
    except IntegrityError:
        # Another publish of the same version won the race (unique index on published versions).
        db_session.rollback()
        raise errors.VersionConflict(
            form_id=form.xml_form_id, version=version or draft.version
        ) from None
    except BaseException:
        db_session.rollback()
        raise
    return published


def _set_version(draft: FormVersion, version: str) -> None:
    if len(version) > 255 or not version.strip():
        raise errors.UnexpectedValue(field="version", reason=_("expected 1 to 255 characters"))
    try:
        text = xform.set_version(draft.xml, version)
    except xform.XFormError as exc:
        raise errors.UnexpectedValue(field="version", reason=str(exc)) from None
    draft.xml = text
    draft.version = version
    draft.hash = _md5(text)
    draft.sha256 = _sha256(text)
    draft.schema = {**draft.schema, "version": version}


def delete_draft(db_session: Session, form: Form, *, actor_id: int | None = None) -> None:
    """Abandon the form's draft; a form never published goes with it. Commits."""
    draft = draft_version(db_session, form)
    if draft is None:
        raise errors.NotFound()
    try:
        _discard_draft(db_session, form, draft)
        record(
            db_session,
            "form.update.draft.delete",
            actor_id=actor_id,
            project_id=form.project_id,
            form_id=form.id,
            details={"version": draft.version},
        )
        if form.current_version_id is None:
            db_session.delete(form)
        db_session.commit()
    except BaseException:
        db_session.rollback()
        raise


def set_state(db_session: Session, form: Form, state: str, *, actor_id: int | None = None) -> Form:
    """Open, close (``closed``) or half-close (``closing``) a form. Commits."""
    if state not in FORM_STATES:
        raise errors.UnexpectedValue(
            field="state", reason=_("expected one of open, closing, closed")
        )
    if form.state != state:
        form.state = state
        form.updated_at = utcnow()
        record(
            db_session,
            "form.update.state",
            actor_id=actor_id,
            project_id=form.project_id,
            form_id=form.id,
            details={"state": state},
        )
    db_session.commit()
    return form


# ---- the submissions table's answer columns --------------------------------------------------

MAX_LIST_COLUMNS = 6


def list_column_choices(form_schema: schema.FormSchema) -> list[schema.Field]:
    """The questions whose answers the submissions table can show: one value per record (not
    inside a repeat), text not a file, not the meta block."""
    return [
        f
        for f in form_schema.questions
        if not f.repeats and not f.repeat and not f.is_binary and not f.is_meta
    ]


def list_columns(form: Form, form_schema: schema.FormSchema) -> list[schema.Field]:
    """The questions the form's submissions table shows, those its version still has."""
    chosen = {f.path: f for f in list_column_choices(form_schema)}
    return [chosen[p] for p in form.list_columns or () if p in chosen]


def set_list_columns(
    db_session: Session, form: Form, form_schema: schema.FormSchema, paths: list[str]
) -> Form:
    """Keep the questions whose answers the submissions table shows (for everyone). Commits."""
    offered = {f.path for f in list_column_choices(form_schema)}
    unknown = [p for p in paths if p not in offered]
    if unknown:
        raise errors.UnexpectedValue(
            field="columns", reason=_("not a question of this form: %(path)s", path=unknown[0])
        )
    if len(paths) > MAX_LIST_COLUMNS:
        raise errors.UnexpectedValue(
            field="columns",
            reason=_("at most %(count)s questions", count=MAX_LIST_COLUMNS),
        )
    form.list_columns = list(dict.fromkeys(paths)) or None
    form.updated_at = utcnow()
    db_session.commit()
    return form


# ---- media on the draft ----------------------------------------------------------------------


def attach(
    db_session: Session,
    form: Form,
    name: str,
    stream: BinaryIO,
    *,
    content_type: str | None = None,
    actor_id: int | None = None,
) -> FormAttachment:
    """Store a media file the draft references (replacing any previous one). Commits.

    404 when the form has no draft or its XForm does not reference ``name``. A CSV that a
    choice list comes from fills that list in the schema.
    """
    draft = draft_version(db_session, form)
    if draft is None:
        raise errors.NotFound()
    found = find_attachment(db_session, draft, name)
    if found is None:
        raise errors.NotFound()
    attachment, _ = found
    db_session.commit()  # end the read transaction while the file goes to the store
    try:
        blob = storage.save_stream(db_session, stream, limit=MAX_MEDIA_BYTES)
    except ValueError:
        raise errors.PayloadTooLarge(size="?", limit=MAX_MEDIA_BYTES) from None
    try:
        attachment.blob_id = blob.id
        attachment.content_type = _content_type(name, content_type)
        attachment.dataset_id = None
        attachment.updated_at = utcnow()
        db_session.add(attachment)
        db_session.flush()
        if name in draft.form_schema.file_choice_files:
            _refresh_choices(db_session, draft)
        record(
            db_session,
            "form.attachment.update",
            actor_id=actor_id,
            project_id=form.project_id,
            form_id=form.id,
            details={"name": name, "blobId": blob.id, "md5": blob.md5},
        )
        db_session.commit()
    except BaseException:
        db_session.rollback()
        raise
    return attachment


def clear_attachment(
    db_session: Session, form: Form, name: str, *, actor_id: int | None = None
) -> FormAttachment:
    """Remove a draft's media file (the draft then cannot be published until it is back)."""
    draft = draft_version(db_session, form)
    found = find_attachment(db_session, draft, name) if draft is not None else None
    if found is None:
        raise errors.NotFound()
    attachment, _ = found
    try:
        attachment.blob_id = None
        attachment.updated_at = utcnow()
        db_session.flush()
        if name in draft.form_schema.file_choice_files:
            _refresh_choices(db_session, draft)
        record(
            db_session,
            "form.attachment.update",
            actor_id=actor_id,
            project_id=form.project_id,
            form_id=form.id,
            details={"name": name, "blobId": None},
        )
        db_session.commit()
    except BaseException:
        db_session.rollback()
        raise
    return attachment
