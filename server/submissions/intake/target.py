"""The form and version a record names, and its field schema.

Records filled on any published version are accepted (tablets update at their own pace);
draft test records must name the draft's version. The form and the version are read in one
query, in Core; the schema of a published version never changes, so it is read and typed
once per process (its repeats and binaries are then computed once too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import errors
from server.forms.models import Form, FormVersion
from server.forms.schema import FormSchema
from server.submissions import parsing

FORMS, FORM_VERSIONS = Form.__table__, FormVersion.__table__


@dataclass(frozen=True)
class FormRef:
    """The facts of a form intake needs, read in one query with the record's version."""

    id: int
    project_id: int
    xml_form_id: str
    state: str


@dataclass(frozen=True)
class Target:
    """The form and the version a record was filled on, with its field schema."""

    form: FormRef
    version_id: int
    schema: FormSchema
    draft: bool


def find(
    db_session: Session,
    project_id: int,
    parsed: parsing.ParsedSubmission,
    *,
    draft: bool,
    authorize: Callable[[FormRef], None] | None,
) -> Target:
    """Return the form and version ``parsed`` names, once the sender may send it there.

    Raises problems: 404 (no such form, version or draft), what ``authorize`` raises (403), 409
    (a closed form takes no more records; its draft still takes test records).
    """
    row = db_session.execute(
        _STATEMENT[draft],
        {"project_id": project_id, "xml_form_id": parsed.form_id, "version": parsed.version},
    ).first()
    if row is None:
        raise errors.FormNotFound(form_id=parsed.form_id)
    form_id, state, version_id, version_hash, published_at = row
    form = FormRef(form_id, project_id, parsed.form_id, state)
    if authorize is not None:
        authorize(form)
    if form.state == "closed" and not draft:
        raise errors.NotAcceptingSubmissions(form_id=parsed.form_id)
    if version_id is None:
        if draft:
            raise errors.DraftNotFound()
        raise errors.FormVersionNotFound(version=parsed.version or '""', form_id=parsed.form_id)
    schema = _schema(db_session, version_id, version_hash, published=published_at is not None)
    return Target(form, version_id, schema, draft)


def _statement(*, draft: bool) -> sa.Select:
    """The form and the version a record names, in one query (built once, in Core)."""
    matches = (
        FORM_VERSIONS.c.id == FORMS.c.draft_version_id
        if draft
        else FORM_VERSIONS.c.published_at.is_not(None)
    )
    return (
        sa.select(
            FORMS.c.id,
            FORMS.c.state,
            FORM_VERSIONS.c.id,
            FORM_VERSIONS.c.hash,
            FORM_VERSIONS.c.published_at,
        )
        .select_from(
            FORMS.outerjoin(
                FORM_VERSIONS,
                sa.and_(
                    FORM_VERSIONS.c.form_id == FORMS.c.id,
                    FORM_VERSIONS.c.version == sa.bindparam("version"),
                    matches,
                ),
            )
        )
        .where(
            FORMS.c.project_id == sa.bindparam("project_id"),
            FORMS.c.xml_form_id == sa.bindparam("xml_form_id"),
            FORMS.c.deleted_at.is_(None),
        )
    )


_STATEMENT = {draft: _statement(draft=draft) for draft in (False, True)}

# Schemas of published versions, which never change: read once per process, not per record.
# Keyed by the XML's MD5 as well as the id, so that an id reused (tests) never gives an old one.
_SCHEMAS: dict[tuple[int, str], FormSchema] = {}
_SCHEMAS_LIMIT = 512


def _schema(
    db_session: Session, version_id: int, version_hash: str, *, published: bool
) -> FormSchema:
    key = (version_id, version_hash)
    if published and key in _SCHEMAS:
        return _SCHEMAS[key]
    found = FormSchema.of(
        db_session.execute(
            sa.select(FORM_VERSIONS.c.schema).where(FORM_VERSIONS.c.id == version_id)
        ).scalar_one()
    )
    if published:  # drafts change as media is attached: never cached
        if len(_SCHEMAS) >= _SCHEMAS_LIMIT:
            _SCHEMAS.clear()
        _SCHEMAS[key] = found
    return found
