"""Choosing the blob store from the configuration, and storing files with their catalogue row.

This is the only module the rest of the server calls for attachments: intake, forms and
exports never talk to a backend directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy.orm import Session

from server.db import insert_or_ignore
from server.storage.base import BlobStore, StagedFile, stage
from server.storage.local import LocalStore
from server.storage.models import Blob


def open_store(url: str) -> BlobStore:
    """Return the backend a storage URL names: ``s3://bucket/prefix`` or a folder path."""
    if url.startswith("s3://"):
        from server.storage.s3 import S3Store  # boto3 is imported only there

        return S3Store.from_url(url)
    if url.startswith("file://"):
        url = url[len("file://") :]
    return LocalStore(url)


def init_app(app: Flask) -> None:
    """Attach the configured blob store to the app."""
    app.extensions["merit.storage"] = open_store(app.config["STORAGE_URL"])


def store() -> BlobStore:
    """Return the current application's blob store."""
    return current_app.extensions["merit.storage"]


def staging_dir() -> Path:
    """Folder for files on their way into the store (same disk as the data folder)."""
    return Path(current_app.config["DATA_DIR"]) / "staging"


def stage_stream(stream: BinaryIO, *, limit: int | None = None) -> StagedFile:
    """Copy an incoming stream to the staging folder, hashing it."""
    return stage(stream, staging_dir(), limit=limit)


def save(db_session: Session, staged: StagedFile) -> Blob:
    """Make a staged file durable in the store and return its catalogue row (not committed).

    The bytes are durable when this returns; the caller commits the rows that reference the
    blob afterwards, so no row ever points at bytes that are not there.
    """
    store().put(staged)
    insert_or_ignore(
        db_session,
        Blob.__table__,
        {"sha256": staged.sha256, "md5": staged.md5, "size": staged.size},
        conflict=["sha256"],
    )
    return db_session.execute(sa.select(Blob).where(Blob.sha256 == staged.sha256)).scalar_one()


def save_stream(db_session: Session, stream: BinaryIO, *, limit: int | None = None) -> Blob:
    """Stage, store and catalogue a stream in one call; the staged copy is removed."""
    staged = stage_stream(stream, limit=limit)
    try:
        return save(db_session, staged)
    finally:
        staged.discard()


def read(blob: Blob, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Yield the bytes of a catalogued blob."""
    return store().open(blob.sha256, start, end)


def read_all(blob: Blob) -> bytes:
    """Return a small blob's bytes (form XML, CSV media); never for attachments of any size."""
    return b"".join(read(blob))
