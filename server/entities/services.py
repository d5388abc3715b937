"""Entity lists (datasets), their properties and entities, as ODK Central keeps them.

An entity list belongs to a project and has named properties; each entity has a UUID, a label
and a value (text) per property, and keeps every version: an update writes version n + 1 and
the earlier ones stay. Updates name the version they were based on (``baseVersion``), so two
people editing the same entity cannot silently overwrite each other (409.15), unless one says
``force``. Deleting an entity hides it; its UUID cannot be used again (409.19).

Services commit their change together with its audit event; they know nothing of HTTP.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask_babel import gettext
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import errors
from server.audit import services as audit
from server.auth.models import Actor
from server.db import utcnow
from server.entities.models import Dataset, DatasetProperty, Entity, EntityVersion

RESERVED_PROPERTIES = {"name", "label"}
MAX_LABEL = 10_000
MAX_VALUE = 100_000
# An entity's conflict, as a column an OData $filter can name: None, "soft" or "hard" (an
# update from a record based on an older version; the API's updates refuse that with 409.15).
CONFLICT = Entity.conflict


@dataclass
class DatasetSummary:
    """An entity list with its counts, as lists show it."""

    dataset: Dataset
    entities: int
    last_entity: dt.datetime | None


@dataclass
class EntityRow:
    """An entity with its current version."""

    entity: Entity
    version: EntityVersion
    versions: int = 1
    creator_name: str | None = None


def odata_name(name: str) -> str:
    """Return a property's name as an OData identifier (Central's sanitising)."""
    name = re.sub(r"^([^a-zA-Z_])", r"_\1", name)
    return re.sub(r"[^a-zA-Z0-9_]+", "_", name)


def _audit(
    db_session: Session,
    action: str,
    *,
    actor_id: int | None,
    project_id: int,
    entity_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    audit.record(
        db_session,
        action,
        actor_id=actor_id,
        project_id=project_id,
        entity_id=entity_id,
        details=details,
    )


def touch(db_session: Session, dataset_id: int) -> None:
    """Raise a list's revision: what its CSV holds has changed (in the caller's transaction)."""
    db_session.execute(
        sa.update(Dataset).where(Dataset.id == dataset_id).values(revision=Dataset.revision + 1)
    )


# ---- entity lists ------------------------------------------------------------------------------


def list_datasets(db_session: Session, project_id: int) -> list[DatasetSummary]:
    """Return the project's entity lists by name, with their live entity counts."""
    counts = (
        sa.select(
            Entity.dataset_id,
            sa.func.count(Entity.id).label("entities"),
            sa.func.max(Entity.created_at).label("last"),
        )
        .where(Entity.deleted_at.is_(None))
        .group_by(Entity.dataset_id)
        .subquery()
    )
    rows = db_session.execute(
        sa.select(Dataset, counts.c.entities, counts.c.last)
        .outerjoin(counts, counts.c.dataset_id == Dataset.id)
        .where(Dataset.project_id == project_id)
        .order_by(Dataset.name)
    ).all()
    return [DatasetSummary(d, n or 0, last) for d, n, last in rows]


def get_dataset(db_session: Session, project_id: int, name: str) -> Dataset:
    """Return an entity list by name; 404 when the project has none by that name."""
    found = db_session.execute(
        sa.select(Dataset).where(Dataset.project_id == project_id, Dataset.name == name)
    ).scalar_one_or_none()
    if found is None:
        raise errors.NotFound()
    return found


def _letter(ch: str) -> bool:
    return unicodedata.category(ch).startswith("L")


def _digit(ch: str) -> bool:
    return "0" <= ch <= "9"  # ASCII digits only, as JavaScript's \d


def valid_list_name(name: str) -> bool:
    """Tell whether Central accepts ``name`` for an entity list (``uuid:9f1c...`` included).

    Central's rule: a letter (any script), ``:`` or ``_``, then letters, ``:``, ASCII digits,
    ``_`` or ``-``; no ``.``; not starting with ``__``.
    """
    return (
        bool(name)
        and not name.startswith("__")
        and (_letter(name[0]) or name[0] in ":_")
        and all(_letter(c) or _digit(c) or c in ":_-" for c in name[1:])
    )


def valid_property_name(name: str) -> bool:
    """Tell whether Central accepts ``name`` for a property (``name`` and ``label`` are not).

    Central's rule: a letter or ``_``, then letters, ASCII digits, ``.``, ``_`` or ``-``; no
    ``:``; not starting with ``__``.
    """
    return (
        bool(name)
        and not name.startswith("__")
        and (_letter(name[0]) or name[0] == "_")
        and all(_letter(c) or _digit(c) or c in "._-" for c in name[1:])
    )


def _check_name(field: str, name: str, valid: Callable[[str], bool], rule: str) -> str:
    name = (name or "").strip()
    if len(name) > 255 or not valid(name):
        raise errors.UnexpectedValue(field=field, reason=rule)
    return name


def _list_name(field: str, name: str) -> str:
    return _check_name(
        field,
        name,
        valid_list_name,
        gettext(
            "expected a name that starts with a letter, : or _, holds only letters, digits, "
            ":, _ and -, and does not start with __"
        ),
    )


def _property_name(field: str, name: str) -> str:
    return _check_name(
        field,
        name,
        valid_property_name,
        gettext(
            "expected a name that starts with a letter or _, holds only letters, digits, "
            "_, - and ., and does not start with __"
        ),
    )


def create_dataset(
    db_session: Session,
    project_id: int,
    name: str,
    *,
    approval_required: bool = False,
    actor_id: int | None,
) -> Dataset:
    """Create an entity list (published at once, as Central's API does). Commits."""
    name = _list_name("name", name)
    clash = db_session.execute(
        sa.select(Dataset.name).where(
            Dataset.project_id == project_id, sa.func.lower(Dataset.name) == name.lower()
        )
    ).scalar_one_or_none()
    if clash == name:
        raise errors.Conflict(fields="name", values=name)
    if clash is not None:
        raise errors.DatasetNameConflict(current=clash, provided=name)
    now = utcnow()
    dataset = Dataset(
        project_id=project_id,
        name=name,
        approval_required=approval_required,
        created_at=now,
        published_at=now,
    )
    db_session.add(dataset)
    try:
        db_session.flush()
    except IntegrityError:
        db_session.rollback()
        raise errors.Conflict(fields="name", values=name) from None
    _audit(
        db_session,
        "dataset.create",
        actor_id=actor_id,
        project_id=project_id,
        details={"name": name, "approvalRequired": approval_required},
    )
    db_session.commit()
    return dataset


def update_dataset(
    db_session: Session, dataset: Dataset, *, approval_required: bool, actor_id: int | None
) -> Dataset:
    """Change whether entities wait for a record's approval. Commits."""
    dataset.approval_required = approval_required
    _audit(
        db_session,
        "dataset.update",
        actor_id=actor_id,
        project_id=dataset.project_id,
        details={"name": dataset.name, "approvalRequired": approval_required},
    )
    db_session.commit()
    return dataset


def properties(db_session: Session, dataset: Dataset) -> list[DatasetProperty]:
    """Return the list's properties in the order they were added."""
    return list(
        db_session.scalars(
            sa.select(DatasetProperty)
            .where(DatasetProperty.dataset_id == dataset.id)
            .order_by(DatasetProperty.id)
        )
    )


def add_property(
    db_session: Session, dataset: Dataset, name: str, *, actor_id: int | None
) -> DatasetProperty:
    """Add a property to an entity list. Commits."""
    name = _property_name("name", name)
    if name.lower() in RESERVED_PROPERTIES:
        raise errors.UnexpectedValue(
            field="name", reason=gettext("name and label are reserved names")
        )
    for existing in properties(db_session, dataset):
        if existing.name == name:
            raise errors.Conflict(fields="name", values=name)
        if existing.name.lower() == name.lower():
            raise errors.PropertyNameConflict(current=existing.name, provided=name)
    now = utcnow()
    prop = DatasetProperty(dataset_id=dataset.id, name=name, created_at=now, published_at=now)
    db_session.add(prop)
    try:
        db_session.flush()
    except IntegrityError:
        db_session.rollback()
        raise errors.Conflict(fields="name", values=name) from None
    _audit(
        db_session,
        "dataset.update",
        actor_id=actor_id,
        project_id=dataset.project_id,
        details={"name": dataset.name, "property": name},
    )
    touch(db_session, dataset.id)
    db_session.commit()
    return prop


# ---- lists declared by forms -------------------------------------------------------------------

# entities-version values a form may declare (Central accepts 2022.1.0 to 2025.1.x).
_ENTITIES_VERSION = re.compile(r"^(\d{4})\.(\d+)\.\d+$")


def check_entities_version(version: str | None) -> None:
    """Refuse a form whose entities-version this server cannot read (400.8)."""
    match = _ENTITIES_VERSION.match(version or "")
    if match is None or not ((2022, 1) <= (int(match[1]), int(match[2])) <= (2025, 1)):
        raise errors.UnexpectedValue(
            field="entities-version",
            reason=gettext(
                "the form declares entities with version %(version)s; this server reads "
                "2022.1.0 to 2025.1.x (update pyxform or ODK's form tools)"
            )
            % {"version": version or "(none)"},
        )


def declare(
    db_session: Session,
    project_id: int,
    blocks: Sequence[Mapping[str, Any]],
    *,
    actor_id: int | None,
    form_id: str,
) -> dict[str, Dataset]:
    """Create the lists and properties a form being published writes to (not committed).

    ``blocks`` are the schema's entity blocks (:func:`server.forms.schema.extract`). Lists
    and properties already there are kept; new ones are created, each audited. Names that
    differ only by capitalisation from existing ones are refused (409.16, 409.17), as are
    names that are not XML names (400.8). Returns the lists by name.
    """
    wanted: dict[str, list[str]] = {}
    for block in blocks:
        props = wanted.setdefault(block["dataset"], [])
        for entry in block["properties"]:
            if entry["property"] not in props:
                props.append(entry["property"])
    found: dict[str, Dataset] = {}
    for name, props in wanted.items():
        name = _list_name("dataset", name)
        dataset = db_session.execute(
            sa.select(Dataset).where(
                Dataset.project_id == project_id, sa.func.lower(Dataset.name) == name.lower()
            )
        ).scalar_one_or_none()
        now = utcnow()
        if dataset is not None and dataset.name != name:
            raise errors.DatasetNameConflict(current=dataset.name, provided=name)
        if dataset is None:
            dataset = Dataset(project_id=project_id, name=name, created_at=now, published_at=now)
            db_session.add(dataset)
            db_session.flush()
            _audit(
                db_session,
                "dataset.create",
                actor_id=actor_id,
                project_id=project_id,
                details={"name": name, "approvalRequired": False, "form": form_id},
            )
        existing = {p.name.lower(): p.name for p in properties(db_session, dataset)}
        added = []
        for prop in props:
            prop = _property_name("property", prop)
            if prop.lower() in RESERVED_PROPERTIES:
                raise errors.UnexpectedValue(
                    field="property", reason=gettext("name and label are reserved names")
                )
            known = existing.get(prop.lower())
            if known is not None and known != prop:
                raise errors.PropertyNameConflict(current=known, provided=prop)
            if known is None:
                db_session.add(
                    DatasetProperty(
                        dataset_id=dataset.id, name=prop, created_at=now, published_at=now
                    )
                )
                existing[prop.lower()] = prop
                added.append(prop)
        if added:
            db_session.flush()
            touch(db_session, dataset.id)
            _audit(
                db_session,
                "dataset.update",
                actor_id=actor_id,
                project_id=project_id,
                details={"name": name, "properties": added, "form": form_id},
            )
        found[name] = dataset
    return found


def find_datasets(db_session: Session, project_id: int, names: Sequence[str]) -> dict[str, Dataset]:
    """Return the project's lists with these names, by name (missing ones left out)."""
    if not names:
        return {}
    return {
        d.name: d
        for d in db_session.scalars(
            sa.select(Dataset).where(Dataset.project_id == project_id, Dataset.name.in_(names))
        )
    }


# ---- entities ----------------------------------------------------------------------------------


def _rows(db_session: Session, query: sa.Select) -> list[EntityRow]:
    counts = (
        sa.select(EntityVersion.entity_id, sa.func.count().label("versions"))
        .group_by(EntityVersion.entity_id)
        .subquery()
    )
    rows = db_session.execute(
        query.add_columns(EntityVersion, counts.c.versions, Actor.display_name)
        .join(
            EntityVersion,
            sa.and_(EntityVersion.entity_id == Entity.id, EntityVersion.current.is_(True)),
        )
        .join(counts, counts.c.entity_id == Entity.id)
        .outerjoin(Actor, Actor.id == Entity.creator_id)
    ).all()
    return [EntityRow(e, v, n, name) for e, v, n, name in rows]


def _where(dataset: Dataset, deleted: bool | None, condition: Any) -> list[Any]:
    where = [Entity.dataset_id == dataset.id]
    if deleted is not None:
        where.append(Entity.deleted_at.is_not(None) if deleted else Entity.deleted_at.is_(None))
    if condition is not None:
        where.append(condition)
    return where


def entities(
    db_session: Session,
    dataset: Dataset,
    *,
    deleted: bool | None = False,
    after_id: int | None = None,
    limit: int | None = None,
    offset: int = 0,
    newest_first: bool = True,
    condition: Any = None,
) -> list[EntityRow]:
    """Return a list's entities with their current versions (newest first, as Central).

    ``deleted``: the live entities (False), the deleted ones (True) or both (None).
    ``condition``: an SQL condition on :class:`Entity`'s columns (an OData ``$filter``).
    """
    query = sa.select(Entity).where(*_where(dataset, deleted, condition))
    if after_id is not None:
        query = query.where(Entity.id < after_id if newest_first else Entity.id > after_id)
    query = query.order_by(Entity.id.desc() if newest_first else Entity.id.asc()).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return _rows(db_session, query)


def count_entities(
    db_session: Session, dataset: Dataset, *, deleted: bool | None = False, condition: Any = None
) -> int:
    """Count a list's live entities (or as :func:`entities` selects them)."""
    return db_session.execute(
        sa.select(sa.func.count()).select_from(Entity).where(*_where(dataset, deleted, condition))
    ).scalar_one()


def get_entity(db_session: Session, dataset: Dataset, uuid: str) -> EntityRow:
    """Return one live entity by UUID; 404 otherwise."""
    found = _rows(
        db_session,
        sa.select(Entity).where(
            Entity.dataset_id == dataset.id,
            Entity.uuid == _uuid_or_none(uuid),
            Entity.deleted_at.is_(None),
        ),
    )
    if not found:
        raise errors.NotFound()
    return found[0]


def versions(db_session: Session, entity: Entity) -> list[EntityVersion]:
    """Return every version of an entity, oldest first."""
    return list(
        db_session.scalars(
            sa.select(EntityVersion)
            .where(EntityVersion.entity_id == entity.id)
            .order_by(EntityVersion.version)
        )
    )


def normal_uuid(value: str | None) -> str | None:
    """Return a UUID as Central keeps it (lower case, no ``uuid:``), or None if it is not one."""
    return _uuid_or_none(value)


def clean_values(data: Mapping[str, Any] | None) -> dict[str, str]:
    """Check the values a record gives its properties (text, not too long)."""
    return _clean_data(data, set(data or {}))


def clean_label(label: Any) -> str:
    """Check a label (non-blank text, not too long)."""
    return _clean_label(label)


def _uuid_or_none(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip().lower().removeprefix("uuid:")
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        return None


def _clean_data(
    data: Mapping[str, Any] | None, allowed: set[str], *, position: int | None = None
) -> dict[str, str]:
    """Check property values: known properties only, text only (null means empty)."""
    where = "" if position is None else gettext(" (entity %(n)s)") % {"n": position}
    clean: dict[str, str] = {}
    for key, value in (data or {}).items():
        if key not in allowed:
            raise errors.InvalidEntity(
                reason=gettext("the entity list has no property %(name)s%(where)s")
                % {"name": key, "where": where}
            )
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise errors.InvalidEntity(
                reason=gettext("the value of %(name)s must be text%(where)s")
                % {"name": key, "where": where}
            )
        if len(value) > MAX_VALUE:
            raise errors.InvalidEntity(
                reason=gettext("the value of %(name)s is too long%(where)s")
                % {"name": key, "where": where}
            )
        clean[key] = value
    return clean


def _clean_label(label: Any, *, position: int | None = None) -> str:
    where = "" if position is None else gettext(" (entity %(n)s)") % {"n": position}
    if not isinstance(label, str) or not label.strip():
        reason = gettext("the label is empty%(where)s") % {"where": where}
        raise errors.InvalidEntity(reason=reason)
    if len(label) > MAX_LABEL:
        raise errors.InvalidEntity(
            reason=gettext("the label is too long%(where)s") % {"where": where}
        )
    return label


@dataclass
class NewEntity:
    """One entity to create: its UUID (None: generate one), label and property values."""

    uuid: str | None
    label: str
    data: Mapping[str, Any]


def create_entities(
    db_session: Session,
    dataset: Dataset,
    items: Sequence[NewEntity],
    *,
    actor_id: int | None,
    user_agent: str | None,
    source: dict[str, Any] | None = None,
) -> list[Entity]:
    """Create entities, all or none (each checked first). Commits."""
    allowed = {p.name for p in properties(db_session, dataset)}
    bulk = len(items) > 1 or source is not None
    prepared: list[tuple[str, str, dict[str, str]]] = []
    seen: set[str] = set()
    for position, item in enumerate(items, 1):
        at = position if bulk else None
        if item.uuid is None:
            uuid = str(uuidlib.uuid4())
        else:
            uuid = _uuid_or_none(item.uuid)
            if uuid is None:
                raise errors.UnexpectedValue(field="uuid", reason=gettext("expected a UUID"))
        if uuid in seen:
            raise errors.Conflict(fields="uuid", values=uuid)
        seen.add(uuid)
        prepared.append(
            (
                uuid,
                _clean_label(item.label, position=at),
                _clean_data(item.data, allowed, position=at),
            )
        )
    taken = dict(
        db_session.execute(
            sa.select(Entity.uuid, Entity.deleted_at).where(
                Entity.dataset_id == dataset.id, Entity.uuid.in_(list(seen))
            )
        ).all()
    )
    deleted = sorted(u for u, when in taken.items() if when is not None)
    if deleted:
        raise errors.DeletedEntityConflict(uuids=", ".join(deleted))
    if taken:
        raise errors.Conflict(fields="uuid", values=", ".join(sorted(taken)))
    now = utcnow()
    created: list[Entity] = []
    ua = (user_agent or "")[:255]
    for uuid, _label, _data in prepared:
        entity = Entity(dataset_id=dataset.id, uuid=uuid, creator_id=actor_id, created_at=now)
        db_session.add(entity)
        created.append(entity)
    try:
        db_session.flush()
    except IntegrityError:
        db_session.rollback()
        raise errors.Conflict(fields="uuid", values=", ".join(sorted(seen))) from None
    for entity, (_uuid, label, data) in zip(created, prepared, strict=True):
        db_session.add(
            EntityVersion(
                entity_id=entity.id,
                version=1,
                current=True,
                label=label,
                data=data,
                creator_id=actor_id,
                user_agent=ua,
                source=source,
                created_at=now,
            )
        )
    if bulk:
        _audit(
            db_session,
            "entity.bulk.create",
            actor_id=actor_id,
            project_id=dataset.project_id,
            details={"dataset": dataset.name, "count": len(created), "source": source},
        )
    else:
        _audit(
            db_session,
            "entity.create",
            actor_id=actor_id,
            project_id=dataset.project_id,
            entity_id=created[0].id,
            details={"dataset": dataset.name, "uuid": created[0].uuid},
        )
    touch(db_session, dataset.id)
    db_session.commit()
    return created


def update_entity(
    db_session: Session,
    dataset: Dataset,
    uuid: str,
    *,
    label: str | None,
    data: Mapping[str, Any] | None,
    base_version: int | None,
    force: bool,
    actor_id: int | None,
    user_agent: str | None,
    resolve: bool = False,
) -> EntityRow:
    """Write a new version of an entity: the label and values given, the others kept. Commits.

    ``base_version`` must be the current version unless ``force``; 409.15 otherwise.
    ``resolve`` also clears the entity's conflict (Central's ``?resolve=true``).
    """
    row = get_entity(db_session, dataset, uuid)
    entity, current = row.entity, row.version
    if not force and base_version != current.version:
        raise errors.EntityVersionConflict(current=current.version, provided=base_version)
    allowed = {p.name for p in properties(db_session, dataset)}
    changes = _clean_data(data, allowed)
    new_label = _clean_label(label) if label is not None else current.label
    now = utcnow()
    current.current = False
    db_session.flush()  # one current version at a time (a partial unique index)
    version = EntityVersion(
        entity_id=entity.id,
        version=current.version + 1,
        base_version=current.version,
        current=True,
        label=new_label,
        data={**(current.data or {}), **changes},
        creator_id=actor_id,
        user_agent=(user_agent or "")[:255],
        source={"dataReceived": {**({"label": label} if label is not None else {}), **changes}},
        created_at=now,
    )
    db_session.add(version)
    entity.updated_at = now
    try:
        db_session.flush()
    except IntegrityError:
        # Someone else wrote this version number first.
        db_session.rollback()
        raise errors.EntityVersionConflict(
            current=current.version + 1, provided=base_version
        ) from None
    _audit(
        db_session,
        "entity.update.version",
        actor_id=actor_id,
        project_id=dataset.project_id,
        entity_id=entity.id,
        details={"dataset": dataset.name, "uuid": entity.uuid, "version": version.version},
    )
    if resolve:
        _resolve(db_session, dataset, entity, actor_id=actor_id)
    touch(db_session, dataset.id)
    db_session.commit()
    return EntityRow(entity, version, row.versions + 1, row.creator_name)


def _resolve(
    db_session: Session, dataset: Dataset, entity: Entity, *, actor_id: int | None
) -> None:
    if entity.conflict is None:
        return
    _audit(
        db_session,
        "entity.update.resolve",
        actor_id=actor_id,
        project_id=dataset.project_id,
        entity_id=entity.id,
        details={"dataset": dataset.name, "uuid": entity.uuid, "conflict": entity.conflict},
    )
    entity.conflict = None


def resolve_conflict(
    db_session: Session, dataset: Dataset, uuid: str, *, actor_id: int | None
) -> EntityRow:
    """Mark an entity's conflict as seen and settled, its values unchanged (audited). Commits."""
    row = get_entity(db_session, dataset, uuid)
    _resolve(db_session, dataset, row.entity, actor_id=actor_id)
    db_session.commit()
    return row


def delete_entity(
    db_session: Session, dataset: Dataset, uuid: str, *, actor_id: int | None
) -> None:
    """Hide an entity (its UUID stays taken). Commits."""
    row = get_entity(db_session, dataset, uuid)
    row.entity.deleted_at = utcnow()
    _audit(
        db_session,
        "entity.delete",
        actor_id=actor_id,
        project_id=dataset.project_id,
        entity_id=row.entity.id,
        details={"dataset": dataset.name, "uuid": row.entity.uuid},
    )
    touch(db_session, dataset.id)
    db_session.commit()
