"""Media files and client audit logs in export zips, read from the blob store in chunks.

Media go under ``media/`` with the names the tablet gave them (the names the tables show),
made one harmless path segment each (:func:`server.exports.streams.entry_segment`: a name
``../../x`` stored before intake refused it comes out ``.._.._x``). Two different files with
one name (rare: Collect names files by the time they were taken) get ``~2``, ``~3``... A file
missing from the store is listed in ``media/missing.csv`` rather than breaking an export
already on its way.

Each record's client audit log (``meta/audit``, Collect's ``audit.csv``) is merged into one
``<formId> - audit.csv``, as in ODK Central, with the record's ``KEY`` on every line and
Collect's columns in a fixed order (columns Collect did not write stay empty).
"""

from __future__ import annotations

import csv
import io
import logging
import zipfile
from collections.abc import Callable, Iterator

from server.exports import source, values
from server.exports.context import ExportContext
from server.exports.streams import ChunkBuffer, entry_segment, open_entry, open_zip, text_writer
from server.storage import services as storage
from server.storage.base import StorageError

log = logging.getLogger(__name__)

AUDIT_COLUMNS = (
    "event",
    "node",
    "start",
    "end",
    "latitude",
    "longitude",
    "accuracy",
    "old-value",
    "new-value",
    "user",
    "change-reason",
)


_NODE = AUDIT_COLUMNS.index("node")
_OLD = AUDIT_COLUMNS.index("old-value")
_NEW = AUDIT_COLUMNS.index("new-value")


def _unique_name(name: str, sha256: str, taken: dict[str, str]) -> str | None:
    """Return the zip name for a file, None when the same bytes are there already."""
    candidate, number = name, 1
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    while candidate in taken:
        if taken[candidate] == sha256[:16]:
            return None
        number += 1
        candidate = f"{stem}~{number}{dot}{extension}"
    taken[candidate] = sha256[:16]
    return candidate


def media_entries(
    ctx: ExportContext, archive: zipfile.ZipFile, buffer: ChunkBuffer, *, folder: str
) -> Iterator[bytes]:
    """Write every present attachment of the chosen records into the zip, in chunks."""
    taken: dict[str, str] = {}
    missing: list[tuple[str, str, str]] = []
    disclosure = ctx.disclosure
    hide = not disclosure.clear and bool(disclosure.fields.file_paths())
    for instance_id, name, sha256, _size, document in source.iter_attachments(
        ctx.db_session, ctx.where, client_audit=False, documents=hide
    ):
        if hide and disclosure.is_personal_file(document, name):
            continue  # a photo of a face, a signature: personal data left out
        zip_name = _unique_name(entry_segment(name), sha256, taken)
        if zip_name is None:
            continue
        try:
            chunks = storage.read_sha256(sha256)
        except StorageError as exc:
            log.warning("export: attachment %s of %s unreadable: %s", name, instance_id, exc)
            missing.append((instance_id, name, str(exc)))
            continue
        with open_entry(archive, folder + zip_name) as entry:
            for chunk in chunks:
                entry.write(chunk)
                if buffer.ready():
                    yield buffer.take()
        if buffer.ready():
            yield buffer.take()
    if missing:
        cell = _cell(ctx)
        with open_entry(archive, folder + "missing.csv") as entry:
            text = text_writer(entry)
            writer = csv.writer(text)
            writer.writerow(["KEY", "file", "problem"])
            writer.writerows([cell(value) for value in line] for line in missing)
            text.close()


def _cell(ctx: ExportContext) -> Callable[[str], str]:
    """Return what a CSV cell of a file without a schema goes through (see values)."""
    return values.guard_unless_number if ctx.options.escape_formulas else str


def audit_entry(
    ctx: ExportContext, archive: zipfile.ZipFile, buffer: ChunkBuffer
) -> Iterator[bytes]:
    """Merge every chosen record's client audit log into ``<formId> - audit.csv``."""
    logs = source.iter_attachments(ctx.db_session, ctx.where, client_audit=True)
    first = next(logs, None)
    if first is None:
        return
    cell = _cell(ctx)
    with open_entry(archive, entry_segment(f"{ctx.xml_form_id} - audit.csv")) as entry:
        text = text_writer(entry)
        writer = csv.writer(text)
        writer.writerow(["KEY", *AUDIT_COLUMNS])
        hide = ctx.disclosure.hides
        for instance_id, name, sha256, _size, _document in _chain(first, logs):
            try:
                # One record's log at a time: a few kilobytes, rarely a few megabytes.
                data = b"".join(storage.read_sha256(sha256))
            except StorageError as exc:
                log.warning("export: audit log %s of %s unreadable: %s", name, instance_id, exc)
                continue
            for line in _audit_lines(data):
                if hide:  # old and new values of personal answers (track-changes)
                    node = line[_NODE]
                    line[_OLD] = ctx.disclosure.audit_value(node, line[_OLD])
                    line[_NEW] = ctx.disclosure.audit_value(node, line[_NEW])
                # A tablet wrote every cell of its log (answers in old-value and new-value).
                writer.writerow([cell(instance_id), *map(cell, line)])
            if buffer.ready():
                text.flush()
                yield buffer.take()
        text.close()


def _chain(first, rest):  # type: ignore[no-untyped-def]
    yield first
    yield from rest


def _audit_lines(data: bytes) -> Iterator[list[str]]:
    """Yield a Collect audit log's lines in :data:`AUDIT_COLUMNS` order."""
    reader = csv.reader(io.StringIO(data.decode("utf-8", errors="replace")))
    header = next(reader, None)
    if not header:
        return
    header = [h.strip().lstrip("\ufeff") for h in header]
    positions = [header.index(c) if c in header else None for c in AUDIT_COLUMNS]
    for line in reader:
        if not line:
            continue
        yield [line[p] if p is not None and p < len(line) else "" for p in positions]


def media_zip_chunks(ctx: ExportContext) -> Iterator[bytes]:
    """Yield a zip of the chosen records' media files (and their audit logs, merged)."""
    buffer = ChunkBuffer()
    archive = open_zip(buffer)
    yield from media_entries(ctx, archive, buffer, folder="media/")
    if ctx.options.client_audit:
        yield from audit_entry(ctx, archive, buffer)
    archive.close()
    ctx.stats.bytes_out = buffer.total
    yield buffer.take()
