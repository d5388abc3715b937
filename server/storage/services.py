"""Choosing the blob store from the configuration, and storing files with their catalogue row.

This is the only module the rest of the server calls for attachments (with
:mod:`server.storage.downloads` for sending them): intake, forms and exports never talk to a
backend directly.

    staged = stage_stream(request_file.stream, limit=...)   # hashed, fsync'd, on local disk
    blob = save(db_session, staged)                          # durable in the store or spool
    db_session.commit()                                      # only now may the tablet get 201
    staged.discard()

Intake stores a record's files before its transaction begins and catalogues them inside it:
:func:`make_durable` for each, then :func:`catalogue` for them all, the one writer of the
catalogue, which :func:`save` calls too.

Order of durability (issue 5): the bytes are durable (the object store confirmed them, or they
are fsync'd in the local spool) before :func:`save` returns; the caller commits the rows that
reference the blob after that; the tablet is answered after the commit. When the store cannot
be reached, :func:`save` puts the file in the spool and a background drainer moves it to the
store later; when the spool is full too, it raises
:class:`~server.errors.StorageBusy` (503 with Retry-After)
and Collect keeps the record and sends it again. Reads look in the spool first.

The database does not record where a blob's bytes are: the store and the spool together are
the truth, and a blob moves from one to the other without the database knowing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy.orm import Session

from server import errors
from server.db import insert_or_ignore
from server.storage.base import (
    BlobMissing,
    BlobStore,
    SpoolFull,
    StagedFile,
    StorageUnavailable,
    stage,
)
from server.storage.local import LocalStore
from server.storage.models import Blob
from server.storage.spool import Drainer, DrainReport, Spool, SpoolReport

log = logging.getLogger(__name__)

# How long a worker sends files straight to the spool after the store failed, instead of
# making each upload wait for the store's timeouts again. The drainer ends it early.
OUTAGE_HOLD_SECONDS = 10.0
# What a client is told to wait when neither the store nor the spool can take a file.
RETRY_AFTER_SECONDS = 120
# How often a worker looks, between requests, for files left in the spool (by a restart).
SPOOL_LOOK_SECONDS = 30.0


class Outage:
    """Remembers, in one process, that the store just failed."""

    def __init__(self, hold: float = OUTAGE_HOLD_SECONDS) -> None:
        self.hold = hold
        self._until = 0.0

    def begin(self) -> None:
        """Note a failure: for a while, send files straight to the spool."""
        self._until = time.monotonic() + self.hold

    def end(self) -> None:
        """Note the store works again."""
        self._until = 0.0

    @property
    def active(self) -> bool:
        """Tell whether the store failed a moment ago."""
        return time.monotonic() < self._until


@dataclass
class Storage:
    """The blob store of one application, with its spool, drainer and outage flag."""

    store: BlobStore
    spool: Spool
    drainer: Drainer
    outage: Outage
    last_look: float = 0.0


def open_store(url: str) -> BlobStore:
    """Return the backend a storage URL names: ``s3://bucket/prefix`` or a folder path."""
    if url.startswith("s3://"):
        from server.storage.s3 import S3Store  # boto3 is imported only there

        return S3Store.from_url(url)
    return LocalStore.from_url(url)


def init_app(app: Flask) -> None:
    """Attach the configured blob store, its spool and its drainer to the app."""
    blob_store = open_store(app.config["STORAGE_URL"])
    blob_spool = Spool(app.config["SPOOL_DIR"], app.config["SPOOL_MAX_BYTES"])
    outage = Outage()
    drainer = Drainer(blob_spool, blob_store, on_moved=outage.end)
    app.extensions["merit.storage"] = blob_store
    app.extensions["merit.storage.runtime"] = Storage(blob_store, blob_spool, drainer, outage)
    app.before_request(_look_at_spool)


def _runtime() -> Storage:
    return current_app.extensions["merit.storage.runtime"]


def _look_at_spool() -> None:
    """Start the drainer if files wait in the spool (left by a restart or another worker)."""
    runtime = _runtime()
    now = time.monotonic()
    if now - runtime.last_look < SPOOL_LOOK_SECONDS:
        return
    runtime.last_look = now
    if not runtime.drainer.running and not runtime.spool.is_empty():
        runtime.drainer.kick()


def store() -> BlobStore:
    """Return the current application's blob store."""
    return current_app.extensions["merit.storage"]


def spool() -> Spool:
    """Return the current application's spool."""
    return _runtime().spool


def drainer() -> Drainer:
    """Return this process's drainer (tests and the CLI wait on it)."""
    return _runtime().drainer


def staging_dir() -> Path:
    """Folder for files on their way into the store (same disk as the data folder)."""
    return Path(current_app.config["DATA_DIR"]) / "staging"


def stage_stream(stream: BinaryIO, *, limit: int | None = None) -> StagedFile:
    """Copy an incoming stream to the staging folder, hashing it."""
    return stage(stream, staging_dir(), limit=limit)


def make_durable(staged: StagedFile) -> Literal["store", "spool"]:
    """Put a staged file in the store, or in the spool if the store is unreachable.

    Returns where it went. Raises :class:`errors.StorageBusy` (503, Retry-After) when neither can
    take it; the caller must then not acknowledge anything.
    """
    runtime = _runtime()
    tried = False
    if not runtime.outage.active:
        tried = True
        try:
            runtime.store.put(staged)
            return "store"
        except StorageUnavailable as exc:
            runtime.outage.begin()
            log.warning("blob store unreachable, spooling %s: %s", staged.sha256, exc)
    try:
        runtime.spool.add(staged)
    except SpoolFull as exc:
        if not tried:
            # The store may be back already; one try costs less than a refused upload.
            try:
                runtime.store.put(staged)
                runtime.outage.end()
                return "store"
            except StorageUnavailable:
                runtime.outage.begin()
        log.error("blob store unreachable and spool full: %s", exc)
        raise errors.StorageBusy(headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from exc
    except StorageUnavailable as exc:
        log.error("blob store unreachable and spool not writable: %s", exc)
        raise errors.StorageBusy(headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from exc
    runtime.drainer.kick()
    return "spool"


def save(db_session: Session, staged: StagedFile) -> Blob:
    """Make a staged file durable (store or spool) and return its catalogue row (not committed).

    The bytes are durable when this returns; the caller commits the rows that reference the
    blob afterwards, so no row ever points at bytes that are not there. Raises
    :class:`~server.errors.StorageBusy` (503) when nothing can be stored.
    """
    make_durable(staged)
    return db_session.get_one(Blob, catalogue(db_session, [staged])[staged.sha256])


class Hashed(Protocol):
    """What the catalogue records of a file: its SHA-256 (its name), MD5 and size."""

    sha256: str
    md5: str
    size: int


def catalogue(db_session: Session, blobs: Iterable[Hashed]) -> dict[str, int]:
    """Record durable blobs in the catalogue, once each; return their ids by SHA-256.

    The one writer of the ``blobs`` table (intake, form media, the API's attachments): call it
    only once :func:`make_durable` returned for each, since a row promises the bytes are there.
    Not committed: the rows join the caller's transaction with the rows that point at them.
    """
    hashed = {blob.sha256: blob for blob in blobs}
    if not hashed:
        return {}
    # In one order (by SHA-256): two transactions cataloguing the same files cannot deadlock.
    for sha256 in sorted(hashed):
        blob = hashed[sha256]
        insert_or_ignore(
            db_session,
            Blob.__table__,
            {"sha256": sha256, "md5": blob.md5, "size": blob.size},
            conflict=["sha256"],
        )
    return dict(
        db_session.execute(sa.select(Blob.sha256, Blob.id).where(Blob.sha256.in_(hashed))).all()
    )


def save_stream(db_session: Session, stream: BinaryIO, *, limit: int | None = None) -> Blob:
    """Stage, store and catalogue a stream in one call; the staged copy is removed."""
    staged = stage_stream(stream, limit=limit)
    try:
        return save(db_session, staged)
    finally:
        staged.discard()


def find(db_session: Session, sha256: str) -> Blob | None:
    """Return the catalogue row of a blob, if any."""
    return db_session.execute(sa.select(Blob).where(Blob.sha256 == sha256)).scalar_one_or_none()


def read(blob: Blob, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Yield the bytes of a catalogued blob (``start``..``end`` inclusive), spool first.

    The blob is opened before this returns, so :class:`BlobMissing` and
    :class:`StorageUnavailable` are raised here, not in the middle of a response.
    """
    return read_sha256(blob.sha256, start, end)


def read_sha256(sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Yield the bytes of the blob named ``sha256``, from the spool or the store."""
    try:
        # Spool first: a blob leaves the spool only after the store has it, so looking in
        # this order never misses one that is moving.
        return spool().open(sha256, start, end)
    except BlobMissing:
        return store().open(sha256, start, end)


def read_all(blob: Blob) -> bytes:
    """Return a small blob's bytes (form XML, CSV media); never for attachments of any size."""
    return b"".join(read(blob))


def location(sha256: str) -> Literal["spool", "store"] | None:
    """Tell where a blob's bytes are now, if anywhere (StorageUnavailable if unknown)."""
    if spool().contains(sha256):
        return "spool"
    return "store" if store().exists(sha256) else None


def exists(blob: Blob) -> bool:
    """Tell whether a catalogued blob's bytes are in the spool or the store."""
    return location(blob.sha256) is not None


def presigned_url(
    blob: Blob, filename: str, content_type: str, *, inline: bool = False
) -> str | None:
    """Return a short-lived direct download URL, when configured and the store offers one.

    None when ``MERIT_S3_PRESIGNED_DOWNLOADS`` is off, the backend has no such URLs (local
    folder), or the blob still waits in the spool (the bucket does not have it yet).
    """
    if not current_app.config.get("S3_PRESIGNED_DOWNLOADS"):
        return None
    if spool().contains(blob.sha256):
        return None
    return store().presigned_url(blob.sha256, filename, content_type, inline=inline)


def drain() -> DrainReport:
    """Move every spooled blob to the store now, in this thread; report what happened."""
    runtime = _runtime()
    report = runtime.spool.drain_to(runtime.store)
    if report.moved:
        runtime.outage.end()
    return report


def spool_report() -> SpoolReport:
    """Summarise what waits in the spool."""
    return spool().report()
