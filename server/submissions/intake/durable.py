"""The files of an upload made durable before any row that points at them is written.

Only the files the record names are kept (one per name, the first part of that name); the
others are ignored and logged. Each is staged (hashed, fsync'd), put in the blob store or the
spool, and only then catalogued, inside the transaction that writes the record's rows.
"""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from server.storage import services as storage
from server.submissions import filenames

if TYPE_CHECKING:
    from server.submissions.intake.upload import Upload

log = logging.getLogger(__name__)


@dataclass
class IncomingFile:
    """A file part of an upload: its name, a readable stream and the declared type."""

    name: str
    stream: BinaryIO
    content_type: str | None = None


@dataclass
class Durable:
    """An attachment whose bytes are durable (store or spool), not yet catalogued."""

    name: str
    sha256: str
    md5: str
    size: int
    content_type: str


def make_durable(upload: Upload, files: list[IncomingFile]) -> None:
    """Stage and store the files the record names (``upload.durable``), ignore the others.

    Raises :class:`~server.storage.errors.StorageBusy` (503) when nothing can take a file:
    then nothing is acknowledged, and the device sends the record again.
    """
    if not files:
        return
    # End the read transaction before the slow part: on SQLite it holds the write lock,
    # and copying a photo to the object store must not make every other upload wait.
    upload.db.commit()
    named = {filenames.comparable(name): name for name in upload.expected}
    seen: set[str] = set()
    for incoming in files:
        sent = filenames.part_name(incoming.name)
        name = named.get(sent)
        if name is None:
            upload.ignored.append(sent)
            continue
        if name in seen:
            continue
        seen.add(name)
        content_type = incoming.content_type
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        staged = storage.stage_stream(incoming.stream)
        try:
            storage.make_durable(staged)  # raises a 503 problem when nothing can take it
        finally:
            staged.discard()
        upload.durable.append(Durable(name, staged.sha256, staged.md5, staged.size, content_type))
    if upload.ignored:
        log.info(
            "ignored files not named in the record",
            extra={"fields": {"instance_id": upload.parsed.instance_id, "files": upload.ignored}},
        )


def add_stored(upload: Upload, stored: list[Durable]) -> None:
    """Add files already durable (in the store or the spool) for the names the record gives.

    Taking a kept conflict as an edit brings its files this way: nothing is copied again.
    """
    named = {filenames.comparable(name): name for name in upload.expected}
    seen = {d.name for d in upload.durable}
    for kept in stored:
        name = named.get(filenames.comparable(kept.name))
        if name is not None and name not in seen:
            seen.add(name)
            upload.durable.append(
                Durable(name, kept.sha256, kept.md5, kept.size, kept.content_type)
            )


def catalogue(upload: Upload) -> None:
    """Record the durable files in the blob catalogue (``upload.received``), not committed.

    Called again after a rollback, which undoes the catalogue rows with everything else.
    """
    ids = storage.catalogue(upload.db, upload.durable)
    upload.received = {d.name: (ids[d.sha256], d.content_type) for d in upload.durable}
