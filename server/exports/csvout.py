"""CSV exports: the main table alone, or a zip of every table with media and client audit logs.

The zip is written in one pass over the records. The main table goes straight into the zip as
rows are read, so its first bytes leave at once; each repeat table is written meanwhile to a
temporary file (on disk, never in memory) and appended to the zip after the main table. Then
come the media files and the merged client audit log, each read from the blob store in chunks.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from server.exports import media, streams
from server.exports.context import ExportContext
from server.exports.streams import ChunkBuffer, copy_file, open_entry, open_zip

BOM = "\ufeff"
# Bytes gathered before they are handed on (tests make it small to see many chunks).
CHUNK_BYTES = streams.CHUNK_BYTES


class RowWriter:
    """Write rows of strings as CSV to a byte stream, as the csv module would, but faster.

    The csv module looks at every character of every cell; on a sixty-field row of French
    text it costs more than everything else an export does. Most rows need no quoting, which
    one join and a few C-speed checks of the joined line tell: a cell with a quote or a line
    break shows in the line, a cell with a comma adds a comma. Those rows go to the module.
    (``in`` scans with memchr; a regular expression would cost twenty times more on text with
    accents.) Lines are encoded and handed on in batches of about 64 KiB: one write per row
    would cost a deflate call each in a zip.
    """

    def __init__(self, out: Any, width: int, *, bom: bool = False) -> None:
        self.out = out
        self.commas = width - 1
        self.scratch = io.StringIO()
        self.writer = csv.writer(self.scratch)
        self.pending: list[str] = [BOM] if bom else []
        self.size = 0

    def __call__(self, cells: list[str]) -> None:
        line = ",".join(cells)
        if line.count(",") != self.commas or '"' in line or "\n" in line or "\r" in line:
            self.writer.writerow(cells)
            line = self.scratch.getvalue()
            self.scratch.seek(0)
            self.scratch.truncate()
        else:
            line += "\r\n"
        self.pending.append(line)
        self.size += len(line)
        if self.size >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand what is pending on to the stream."""
        if self.pending:
            self.out.write("".join(self.pending).encode())
            self.pending = []
            self.size = 0


def csv_chunks(ctx: ExportContext) -> Iterator[bytes]:
    """Yield the main table as CSV."""
    buffer = ChunkBuffer()
    main = ctx.plan.main
    writerow = RowWriter(buffer, main.width, bom=ctx.options.bom)
    writerow(main.headers)
    writerow.flush()
    yield buffer.take()
    stats = ctx.stats
    convert = main.convert
    for row in ctx.records():
        writerow(convert(row))
        stats.rows_written += 1
        if buffer.size >= CHUNK_BYTES:
            stats.bytes_out = buffer.total
            yield buffer.take()
    writerow.flush()
    stats.bytes_out = buffer.total
    yield buffer.take()


class _Spill:
    """A repeat table being written to a temporary file."""

    def __init__(self, ctx: ExportContext, headers: list[str]) -> None:
        self.file = ctx.temporary()
        self.writerow = RowWriter(self.file, len(headers), bom=ctx.options.bom)
        self.writerow(headers)

    def rewind(self) -> io.BufferedIOBase:
        """Finish writing and return the file, ready to be read from the start."""
        self.writerow.flush()
        self.file.seek(0)
        return self.file  # type: ignore[return-value]


def csv_zip_chunks(ctx: ExportContext) -> Iterator[bytes]:
    """Yield a zip of every table (and media and client audit logs when asked)."""
    buffer = ChunkBuffer()
    archive = open_zip(buffer)
    tables = ctx.plan.tables()
    main = tables[0]
    spills = {id(table): _Spill(ctx, table.headers) for table in tables[1:]}
    entry = open_entry(archive, main.file_name)
    writerow = RowWriter(entry, main.width, bom=ctx.options.bom)
    writerow(main.headers)
    yield buffer.take()  # the zip's first bytes leave before any record is read
    stats = ctx.stats
    convert = main.convert
    repeat_rows = ctx.repeat_rows if main.children else None
    for row in ctx.records():
        writerow(convert(row))
        stats.rows_written += 1
        if repeat_rows is not None:
            for table, raw in repeat_rows(row):
                spills[id(table)].writerow(table.convert(raw))
        if buffer.size >= CHUNK_BYTES:
            stats.bytes_out = buffer.total
            yield buffer.take()
    writerow.flush()
    entry.close()
    for table in tables[1:]:
        spilled = spills[id(table)].rewind()
        with open_entry(archive, table.file_name) as target:
            yield from copy_file(spilled, target, buffer)
        spilled.close()
    if ctx.options.attachments:
        yield from media.media_entries(ctx, archive, buffer, folder="media/")
        if ctx.options.client_audit:
            yield from media.audit_entry(ctx, archive, buffer)
    archive.close()
    stats.bytes_out = buffer.total
    yield buffer.take()
