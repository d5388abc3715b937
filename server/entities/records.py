"""Entities made by records: the rules of ODK Central's entity processing, in the record's own
transaction.

A form that declares entities (``meta/entity`` blocks, ``save_to`` fields; see
:func:`server.forms.schema.extract`) creates or updates an entity with each record. Central
does this later, in a background job; here it happens in the transaction that stores the
record (:mod:`server.submissions.intake.entities`), so a record that creates a person is
never stored without the person. The rules are Central's (entities.md §3):

* a record has no further entity effect once one of its versions produced an entity version:
  a resend never creates twice, and an edit changes nothing then (an edit can still act when
  the earlier versions had no effect, a false create flag or an error);
* ``create`` needs a non-blank label and an unused UUID; in a list that requires approval,
  only the record's approval creates (:func:`on_approval`);
* ``update`` (tried first when both are set) is based on ``baseVersion``; every ``save_to``
  field present in the record overwrites its property (empty values too), a blank label keeps
  the label. An update based on an older version than the current one is applied all the
  same (last write wins) and flagged: ``hard`` when it changes a value changed on the server
  since its base, ``soft`` otherwise; a ``hard`` flag is never lowered;
* offline updates (``trunkVersion``, ``branchId``): an update whose predecessor on its
  tablet's branch has not arrived is **held** (``entity_backlog``, audit
  ``submission.backlog.hold``) and applied when the predecessor is (``...reprocess``, in the
  predecessor's transaction), or after ``MERIT_ENTITY_BACKLOG_HOURS`` on top of the latest
  version (``...force``: :func:`process_backlog`, run by the server's periodic task and
  ``merit entities backlog``); a forced update of an entity that does not exist creates it,
  and the real create arriving later is applied as an update, flagged;
* one block that cannot be applied undoes every entity change of the record, which is kept
  all the same with an ``entity.error`` event saying why (as Central keeps it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask_babel import gettext
from lxml import etree
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import errors, safexml
from server.audit import services as audit
from server.db import utcnow
from server.entities import services
from server.entities.models import Dataset, Entity, EntityBacklog, EntityVersion
from server.forms.models import Form, FormVersion
from server.submissions.models import Submission, SubmissionVersion

log = logging.getLogger(__name__)

TRUE = frozenset({"1", "true"})
# The label of an entity a forced update creates when its record gives none (Central's).
AUTO_LABEL = "auto generated"
# The events an entity step runs for, as Central names them.
CREATE, EDIT, APPROVAL, REPROCESS, FORCE = (
    "submission.create",
    "submission.update.version",
    "approval",
    "submission.backlog.reprocess",
    "submission.backlog.force",
)


@dataclass
class Block:
    """One entity block of a record, as the record wrote it."""

    dataset: str
    entity_id: str
    create: bool
    update: bool
    may_create: bool  # the actions the form declared
    may_update: bool
    label: str | None
    data: dict[str, str]
    base_version: str
    trunk_version: str
    branch_id: str


@dataclass
class Source:
    """The record version whose blocks are applied, and the event applying them."""

    project_id: int
    form_id: int
    submission_id: int
    version_id: int
    instance_id: str
    actor_id: int | None
    user_agent: str | None
    event: str = CREATE
    blocks: list[Block] = field(default_factory=list)


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _at(element: etree._Element, parts: Sequence[str]) -> list[etree._Element]:
    found = [element]
    for part in parts:
        found = [c for e in found for c in e if _local(c.tag) == part]
    return found


def read_blocks(root: etree._Element, declared: Sequence[Mapping[str, Any]]) -> list[Block]:
    """Return the entity blocks of a record (``root``) for the form's declared blocks."""
    blocks = []
    for spec in declared:
        container_parts = spec["container"].split("/")[2:]
        block_parts = spec["path"][len(spec["container"]) + 1 :].split("/")
        for container in _at(root, container_parts):
            for element in _at(container, block_parts):
                label_element = next((c for c in element if _local(c.tag) == "label"), None)
                label = (label_element.text or "") if label_element is not None else ""
                data: dict[str, str] = {}
                for entry in spec["properties"]:
                    relative = entry["path"][len(spec["container"]) + 1 :].split("/")
                    values = _at(container, relative)
                    if values:
                        data[entry["property"]] = (values[0].text or "").strip()
                blocks.append(
                    Block(
                        dataset=element.get("dataset") or spec["dataset"],
                        entity_id=element.get("id") or "",
                        create=(element.get("create") or "").strip().lower() in TRUE,
                        update=(element.get("update") or "").strip().lower() in TRUE,
                        may_create=bool(spec.get("create")),
                        may_update=bool(spec.get("update")),
                        label=label if label.strip() else None,
                        data=data,
                        base_version=(element.get("baseVersion") or "").strip(),
                        trunk_version=(element.get("trunkVersion") or "").strip(),
                        branch_id=(element.get("branchId") or "").strip(),
                    )
                )
    return blocks


# ---- applying a record's blocks ----------------------------------------------------------------


def apply(db_session: Session, source: Source) -> None:
    """Apply a record version's entity blocks, in the caller's transaction (never commits).

    Does nothing when the record already produced an entity version or waits in the backlog
    (unless this is that wait ending). A block that cannot be applied undoes the record's
    entity changes (a savepoint) and leaves an ``entity.error`` event instead.
    """
    if not source.blocks or _already_applied(db_session, source):
        return
    try:
        with db_session.begin_nested():
            datasets = services.find_datasets(
                db_session, source.project_id, sorted({b.dataset for b in source.blocks})
            )
            for block in source.blocks:
                _apply_block(db_session, source, datasets, block)
    except (errors.Problem, IntegrityError) as exc:
        reason = exc.render_message() if isinstance(exc, errors.Problem) else str(exc.orig)
        _event(
            db_session,
            source,
            "entity.error",
            errorMessage=reason[:2000],
            problem=getattr(exc, "code", None),
        )
        log.info(
            "entity not applied",
            extra={"fields": {"instance_id": source.instance_id, "reason": reason[:500]}},
        )


def _already_applied(db_session: Session, source: Source) -> bool:
    made = db_session.execute(
        sa.select(EntityVersion.id).where(EntityVersion.submission_id == source.submission_id)
    ).first()
    if made is not None:
        return True
    if source.event in (REPROCESS, FORCE):
        return False
    held = db_session.execute(
        sa.select(EntityBacklog.id).where(EntityBacklog.submission_id == source.submission_id)
    ).first()
    return held is not None


def _problem(reason: str) -> errors.InvalidEntity:
    return errors.InvalidEntity(reason=reason)


def _apply_block(
    db_session: Session, source: Source, datasets: Mapping[str, Dataset], block: Block
) -> None:
    dataset = datasets.get(block.dataset)
    if dataset is None:
        raise _problem(
            gettext("the project has no entity list named %(name)s") % {"name": block.dataset}
        )
    for wanted, declared, action in (
        (block.create, block.may_create, "create"),
        (block.update, block.may_update, "update"),
    ):
        if wanted and not declared:
            raise _problem(
                gettext("the form does not declare the action %(action)s") % {"action": action}
            )
    uuid = services.normal_uuid(block.entity_id)
    if uuid is None:
        raise _problem(
            gettext("the entity id %(id)s is not a UUID") % {"id": block.entity_id[:100]}
        )
    _lock(db_session, uuid)
    force = source.event == FORCE
    made: EntityVersion | None = None
    if block.update:
        try:
            made = _update(db_session, source, dataset, block, uuid, force=force)
        except (errors.NotFound, errors.MissingParameter):
            # Not found, or no baseVersion: a create-or-update creates (a forced one too).
            if not (block.create or force):
                raise
            made = _create(db_session, source, dataset, block, uuid, force=force)
    elif block.create:
        existing = _entity(db_session, dataset, uuid, lock=True)
        if existing is not None and _force_created(db_session, existing):
            # Created by a forced update before its create arrived: the create updates it.
            made = _update(db_session, source, dataset, block, uuid, as_create=True)
        else:
            made = _create(db_session, source, dataset, block, uuid, force=force)
    if made is not None and not force:
        _release_next(db_session, source, dataset, uuid, made)


def _lock(db_session: Session, uuid: str) -> None:
    """Serialise work on one entity across server processes (PostgreSQL; SQLite has one writer)."""
    if db_session.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(
        hashlib.blake2b(f"entity:{uuid}".encode(), digest_size=8).digest(), "big", signed=True
    )
    db_session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _entity(
    db_session: Session, dataset: Dataset, uuid: str, *, lock: bool = False
) -> Entity | None:
    query = sa.select(Entity).where(Entity.dataset_id == dataset.id, Entity.uuid == uuid)
    if lock:
        query = query.with_for_update()
    return db_session.execute(query).scalar_one_or_none()


def _current(db_session: Session, entity: Entity) -> EntityVersion:
    return db_session.execute(
        sa.select(EntityVersion).where(
            EntityVersion.entity_id == entity.id, EntityVersion.current.is_(True)
        )
    ).scalar_one()


def _force_created(db_session: Session, entity: Entity) -> bool:
    first = db_session.execute(
        sa.select(EntityVersion.source).where(
            EntityVersion.entity_id == entity.id, EntityVersion.version == 1
        )
    ).scalar_one_or_none()
    return isinstance(first, dict) and bool(first.get("forceProcessed"))


def _int(value: str) -> int | None:
    try:
        number = int(value)
    except ValueError:
        return None
    return number if 0 < number < 2**31 else None


def _source_details(source: Source, **extra: Any) -> dict[str, Any]:
    return {"submission": {"instanceId": source.instance_id}, **extra}


def _create(
    db_session: Session,
    source: Source,
    dataset: Dataset,
    block: Block,
    uuid: str,
    *,
    force: bool,
) -> EntityVersion | None:
    if dataset.approval_required and source.event != APPROVAL:
        return None  # made when the record is approved
    if not dataset.approval_required and source.event == APPROVAL:
        return None
    if dataset.approval_required and force:
        return None  # a forced update never creates in a list that requires approval
    label = block.label
    if label is None and force:
        label = AUTO_LABEL
    if label is None:
        raise _problem(gettext("the label is empty"))
    label = services.clean_label(label)
    data = services.clean_values(block.data)
    existing = _entity(db_session, dataset, uuid)
    if existing is not None:
        if existing.deleted_at is not None:
            raise errors.DeletedEntityConflict(uuids=uuid)
        raise errors.Conflict(fields="uuid", values=uuid)
    now = utcnow()
    entity = Entity(dataset_id=dataset.id, uuid=uuid, creator_id=source.actor_id, created_at=now)
    db_session.add(entity)
    db_session.flush()
    base = _int(block.base_version) if force else None
    version = EntityVersion(
        entity_id=entity.id,
        version=1,
        current=True,
        label=label,
        data=data,
        creator_id=source.actor_id,
        user_agent=(source.user_agent or "")[:255],
        source=_source_details(
            source,
            dataReceived={"label": label, **data},
            **({"forceProcessed": True} if force else {}),
        ),
        created_at=now,
        submission_id=source.submission_id,
        submission_version_id=source.version_id,
        branch_id=block.branch_id or None,
        trunk_version=_int(block.trunk_version),
        branch_base_version=base if block.branch_id else None,
    )
    db_session.add(version)
    db_session.flush()
    services.touch(db_session, dataset.id)
    _event(db_session, source, "entity.create", entity.id, dataset=dataset.name, uuid=uuid)
    return version


def _base(
    db_session: Session,
    source: Source,
    dataset: Dataset,
    block: Block,
    entity: Entity,
    current: EntityVersion,
    *,
    force: bool,
    as_create: bool,
) -> EntityVersion | None:
    """Return the version the update was based on (Central's _computeBaseVersion); None: held."""
    if as_create:
        return current
    base = _int(block.base_version)
    if base is None:
        raise errors.MissingParameter(field="baseVersion")
    condition: Any
    if not block.branch_id or base == 1 or str(base) == block.trunk_version:
        condition = EntityVersion.version == base
    else:
        condition = sa.and_(
            EntityVersion.branch_id == block.branch_id,
            EntityVersion.branch_base_version == base - 1,
        )
    found = db_session.execute(
        sa.select(EntityVersion).where(EntityVersion.entity_id == entity.id, condition)
    ).scalar_one_or_none()
    if found is not None:
        return found
    if not block.branch_id:
        raise _problem(
            gettext("the entity has no version %(version)s") % {"version": block.base_version}
        )
    if force:
        return current
    _hold(db_session, source, dataset, block, entity.uuid, base)
    return None


def _update(
    db_session: Session,
    source: Source,
    dataset: Dataset,
    block: Block,
    uuid: str,
    *,
    force: bool = False,
    as_create: bool = False,
) -> EntityVersion | None:
    if source.event == APPROVAL:
        return None  # approval gates creation only
    entity = _entity(db_session, dataset, uuid, lock=True)
    if entity is None:
        if block.branch_id and not force and _int(block.base_version) is not None:
            # An offline update of an entity created offline whose create has not arrived.
            _hold(db_session, source, dataset, block, uuid, _int(block.base_version) or 1)
            return None
        raise errors.NotFound()
    if entity.deleted_at is not None:
        raise _problem(gettext("the entity %(uuid)s was deleted") % {"uuid": uuid})
    current = _current(db_session, entity)
    base = _base(
        db_session, source, dataset, block, entity, current, force=force, as_create=as_create
    )
    if base is None:
        return None
    trunk = _int(block.trunk_version)
    if trunk is not None and trunk > current.version:
        raise _problem(
            gettext("the entity has no version %(version)s") % {"version": block.trunk_version}
        )
    received = services.clean_values(block.data)
    label = services.clean_label(block.label) if block.label is not None else None
    incoming = {**received, **({"label": label} if label is not None else {})}
    conflict = entity.conflict
    conflicting: list[str] | None = None
    if base.version != current.version or as_create:
        reference = base if not as_create else None
        changed = {
            k: v
            for k, v in (current.data or {}).items()
            if reference is None or (reference.data or {}).get(k) != v
        }
        if reference is None or current.label != reference.label:
            changed["label"] = current.label
        conflicting = [k for k in incoming if k in changed and incoming[k] != changed[k]]
        if conflict != "hard":
            conflict = "hard" if conflicting else "soft"
    elif block.branch_id and conflict != "hard" and _interrupted(db_session, entity, block):
        conflict = "soft"
    now = utcnow()
    current.current = False
    db_session.flush()  # one current version at a time (a partial unique index)
    version = EntityVersion(
        entity_id=entity.id,
        version=current.version + 1,
        base_version=base.version,
        current=True,
        label=label if label is not None else current.label,
        data={**(current.data or {}), **received},
        creator_id=source.actor_id,
        user_agent=(source.user_agent or "")[:255],
        source=_source_details(
            source, dataReceived=incoming, **({"action": "create"} if as_create else {})
        ),
        created_at=now,
        submission_id=source.submission_id,
        submission_version_id=source.version_id,
        branch_id=block.branch_id or None,
        trunk_version=trunk,
        branch_base_version=_int(block.base_version) if block.branch_id else None,
        conflict=conflict if conflicting is not None else None,
        conflicting_properties=conflicting,
    )
    db_session.add(version)
    entity.conflict = conflict
    entity.updated_at = now
    db_session.flush()
    services.touch(db_session, dataset.id)
    _event(
        db_session,
        source,
        "entity.update.version",
        entity.id,
        dataset=dataset.name,
        uuid=uuid,
        version=version.version,
        **({"conflict": conflict} if conflicting is not None else {}),
    )
    return version


def _interrupted(db_session: Session, entity: Entity, block: Block) -> bool:
    """Tell whether another branch wrote a version since this branch's trunk version."""
    found = db_session.execute(
        sa.select(EntityVersion.id)
        .where(
            EntityVersion.entity_id == entity.id,
            EntityVersion.version > (_int(block.trunk_version) or 1),
            sa.or_(EntityVersion.branch_id.is_(None), EntityVersion.branch_id != block.branch_id),
        )
        .limit(1)
    ).first()
    return found is not None


# ---- the backlog of offline updates ------------------------------------------------------------


def _hold(
    db_session: Session, source: Source, dataset: Dataset, block: Block, uuid: str, base: int
) -> None:
    db_session.add(
        EntityBacklog(
            dataset_id=dataset.id,
            submission_id=source.submission_id,
            submission_version_id=source.version_id,
            entity_uuid=uuid,
            branch_id=block.branch_id,
            branch_base_version=base,
            held_at=utcnow(),
        )
    )
    db_session.flush()
    _event(db_session, source, "submission.backlog.hold")


def _event(
    db_session: Session, source: Source, action: str, entity_id: int | None = None, **details: Any
) -> None:
    """Audit what a record did to an entity (the record named in the details, as Central)."""
    audit.record(
        db_session,
        action,
        actor_id=source.actor_id,
        project_id=source.project_id,
        form_id=source.form_id,
        submission_id=source.submission_id,
        entity_id=entity_id,
        details={"instanceId": source.instance_id, "submissionDefId": source.version_id, **details},
    )


def _release_next(
    db_session: Session, source: Source, dataset: Dataset, uuid: str, made: EntityVersion
) -> None:
    """Apply the held update that follows ``made`` on its branch, if one waits."""
    query = sa.select(EntityBacklog).where(EntityBacklog.entity_uuid == uuid)
    if made.branch_id is None:
        query = query.where(EntityBacklog.branch_base_version == 1)
    else:
        query = query.where(
            EntityBacklog.branch_id == made.branch_id,
            EntityBacklog.branch_base_version == (made.branch_base_version or 0) + 1,
        )
    held = db_session.execute(query.order_by(EntityBacklog.id).limit(1)).scalar_one_or_none()
    if held is None:
        return
    _take(db_session, held, REPROCESS)


def _take(db_session: Session, held: EntityBacklog, event: str) -> None:
    """Remove a record from the backlog and apply its blocks (``event``: reprocess or force)."""
    db_session.delete(held)
    db_session.flush()
    source = load_source(db_session, held.submission_version_id, event=event)
    if source is None:
        return
    _event(db_session, source, event)
    apply(db_session, source)


def load_source(db_session: Session, version_id: int, *, event: str) -> Source | None:
    """Read a stored record version's entity blocks (None when it has none to apply)."""
    row = db_session.execute(
        sa.select(
            SubmissionVersion.raw_xml,
            SubmissionVersion.submission_id,
            SubmissionVersion.instance_id,
            SubmissionVersion.submitter_id,
            SubmissionVersion.user_agent,
            SubmissionVersion.encrypted,
            Submission.draft,
            Submission.deleted_at,
            Form.id,
            Form.project_id,
            FormVersion.schema,
        )
        .join(Submission, Submission.id == SubmissionVersion.submission_id)
        .join(Form, Form.id == Submission.form_id)
        .join(FormVersion, FormVersion.id == SubmissionVersion.form_version_id)
        .where(SubmissionVersion.id == version_id)
    ).first()
    if row is None or row.encrypted or row.draft or row.deleted_at is not None:
        return None
    declared = (row.schema or {}).get("entities") or []
    if not declared:
        return None
    root = safexml.parse(row.raw_xml.encode("utf-8"))
    return Source(
        project_id=row.project_id,
        form_id=row.id,
        submission_id=row.submission_id,
        version_id=version_id,
        instance_id=row.instance_id,
        actor_id=row.submitter_id,
        user_agent=row.user_agent,
        event=event,
        blocks=read_blocks(root, declared),
    )


def on_approval(db_session: Session, submission: Submission) -> None:
    """Create the entities a record's approval makes (lists requiring approval), not committed."""
    version_id = db_session.execute(
        sa.select(SubmissionVersion.id).where(
            SubmissionVersion.submission_id == submission.id, SubmissionVersion.current.is_(True)
        )
    ).scalar_one_or_none()
    if version_id is None:
        return
    source = load_source(db_session, version_id, event=APPROVAL)
    if source is not None:
        apply(db_session, source)


def process_backlog(
    db_session: Session, *, older_than: dt.timedelta, now: dt.datetime | None = None
) -> int:
    """Force the updates held longer than ``older_than``, oldest branch order first. Commits.

    Each is applied on top of the entity's latest version (or creates it), in its own
    transaction; returns how many were taken.
    """
    cutoff = (now or utcnow()) - older_than
    ids = list(
        db_session.scalars(
            sa.select(EntityBacklog.id)
            .where(EntityBacklog.held_at <= cutoff)
            .order_by(EntityBacklog.branch_id, EntityBacklog.branch_base_version, EntityBacklog.id)
        )
    )
    db_session.commit()
    taken = 0
    for held_id in ids:
        try:
            held = db_session.get(EntityBacklog, held_id, with_for_update=True)
            if held is None:
                db_session.rollback()
                continue  # released by its predecessor meanwhile
            _take(db_session, held, FORCE)
            db_session.commit()
            taken += 1
        except BaseException:
            db_session.rollback()
            raise
    return taken


def held(db_session: Session) -> list[EntityBacklog]:
    """Return the records waiting in the backlog, oldest first."""
    return list(db_session.scalars(sa.select(EntityBacklog).order_by(EntityBacklog.held_at)))
