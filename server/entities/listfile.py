"""An entity list as the CSV file tablets download with a form that reads it (issue 20, 3).

A form that reads a list (``select_one_from_file participants.csv``, ``instance('participants')``)
has the file linked to the list (:func:`server.forms.services.link_entity_lists`); its manifest
names it as an entity list (``type="entityList"``, ``approvalEntityList`` when the list needs
approval: Collect then never creates in it offline), and its bytes are made from the current
entities, newest first, deleted ones left out::

    name,label,__version,__trunkVersion,__branchId,<property>,...

``name`` is the UUID, ``__version`` the current version (Collect requires these three
columns); ``__trunkVersion`` is the same server version and ``__branchId`` empty, the values a
form reads for an entity as the server has it (Collect keeps its own for entities it changed
offline). Then one column per property, in the order they were added.

The manifest's hash is the MD5 of exactly those bytes, so it changes exactly when they do.
Computing it means writing the file, so it is kept per process, keyed by the list's
*revision*, a counter raised in the transaction of every change of what the file holds
(:func:`server.entities.services.touch`): a manifest asked again with nothing changed costs
one small query. Rows are written as they are read, from one query (a server-side cursor on
PostgreSQL), so memory stays flat whatever the size of the list.
"""

from __future__ import annotations

import csv
import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import db
from server.entities import services
from server.entities.models import Dataset, Entity, EntityVersion

HEADER = ("name", "label", "__version", "__trunkVersion", "__branchId")
YIELD_PER = 2_000
CHUNK_BYTES = 256 * 1024
_CACHE_SIZE = 256

# (database, list id, list created at, revision) -> (MD5, size): a revision names one content
# within one database's history.
_hashes: OrderedDict[tuple[str, int, str, int], tuple[str, int]] = OrderedDict()
_lock = threading.Lock()


def media_type(dataset: Dataset) -> str:
    """Return the manifest's ``type`` for a list (Collect never creates in an approval one)."""
    return "approvalEntityList" if dataset.approval_required else "entityList"


def chunks(db_session: Session, dataset: Dataset) -> Iterator[bytes]:
    """Return the list's CSV as chunks of a few hundred kilobytes, read as they are sent.

    The properties are read now; the rows when the first chunk is asked for.
    """
    names = [p.name for p in services.properties(db_session, dataset)]
    return _chunks(db_session, dataset.id, names)


def download(db_session: Session, dataset: Dataset) -> Iterator[bytes]:
    """Return the list's CSV for a response that streams it after the view has returned.

    The rows are read in a read-only session of the stream's own, closed when the stream ends
    (or is abandoned): the request's session is gone by then.
    """
    names = [p.name for p in services.properties(db_session, dataset)]
    dataset_id = dataset.id

    def stream() -> Iterator[bytes]:
        with db.database().session(readonly=True) as own:
            yield from _chunks(own, dataset_id, names)

    return stream()


def _chunks(db_session: Session, dataset_id: int, names: list[str]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*HEADER, *names])
    # Each value taken out of the JSON by the database (->> on PostgreSQL, json_extract on
    # SQLite): no document is decoded in Python.
    values = [sa.func.coalesce(EntityVersion.data[n].as_string(), "") for n in names]
    query = (
        sa.select(Entity.uuid, EntityVersion.label, EntityVersion.version, *values)
        .join(
            EntityVersion,
            sa.and_(EntityVersion.entity_id == Entity.id, EntityVersion.current.is_(True)),
        )
        .where(Entity.dataset_id == dataset_id, Entity.deleted_at.is_(None))
        .order_by(Entity.id.desc())
    )
    rows = db_session.execute(
        query, execution_options={"stream_results": True, "yield_per": YIELD_PER}
    )
    for uuid, label, version, *found in rows:
        writer.writerow((uuid, label, version, version, "", *found))
        if buffer.tell() >= CHUNK_BYTES:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


def fingerprint(db_session: Session, dataset: Dataset) -> tuple[str, int]:
    """Return the MD5 and size of the list's CSV as it would be served now."""
    revision = db_session.execute(
        sa.select(Dataset.revision).where(Dataset.id == dataset.id)
    ).scalar_one()
    database = db_session.get_bind().url.render_as_string(hide_password=True)
    key = (database, dataset.id, dataset.created_at.isoformat(), revision)
    with _lock:
        known = _hashes.get(key)
        if known is not None:
            _hashes.move_to_end(key)
            return known
    md5, size = hashlib.md5(), 0  # noqa: S324 - Collect's manifest hash is an MD5
    for chunk in chunks(db_session, dataset):
        md5.update(chunk)
        size += len(chunk)
    found = (md5.hexdigest(), size)
    with _lock:
        _hashes[key] = found
        while len(_hashes) > _CACHE_SIZE:
            _hashes.popitem(last=False)
    return found


def forget() -> None:
    """Empty this process's cache of hashes (tests, and after a restore)."""
    with _lock:
        _hashes.clear()


MAX_INTEGRITY_IDS = 10_000


def states(db_session: Session, dataset: Dataset, ids: list[str]) -> list[tuple[str, bool]]:
    """Return (uuid, deleted) for the entities of the list among ``ids`` (Collect's check).

    Collect asks, for the entities it created offline, whether the server still has them, and
    removes those reported deleted; ids the server never saw are not listed (as in Central).
    """
    wanted = sorted({u for u in (services.normal_uuid(i) for i in ids) if u is not None})
    found: list[tuple[str, bool]] = []
    for start in range(0, min(len(wanted), MAX_INTEGRITY_IDS), 500):
        rows = db_session.execute(
            sa.select(Entity.uuid, Entity.deleted_at.is_not(None)).where(
                Entity.dataset_id == dataset.id, Entity.uuid.in_(wanted[start : start + 500])
            )
        ).all()
        found.extend((uuid, bool(deleted)) for uuid, deleted in rows)
    return sorted(found)
