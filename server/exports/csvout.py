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

from server.exports import media
from server.exports.context import ExportContext
from server.exports.streams import (
    CHUNK_BYTES,
    ChunkBuffer,
    copy_file,
    open_entry,
    open_zip,
    text_writer,
)

BOM = "\ufeff"


class RowWriter:
    """Write rows of strings as CSV, as the csv module would, faster when nothing is quoted.

    The csv module looks at every character of every cell; on a sixty-field row of French
    text it costs more than everything else an export does. Most rows need no quoting, which
    one join and a few C-speed checks of the joined line tell: a cell with a quote or a line
    break shows in the line, a cell with a comma adds a comma. Those rows go to the module.
    (``in`` scans with memchr; a regular expression would cost twenty times more on text with
    accents.)
    """

    def __init__(self, text: io.TextIOBase, width: int) -> None:
        self.write = text.write
        self.writer = csv.writer(text)
        self.commas = width - 1

    def __call__(self, cells: list[str]) -> None:
        line = ",".join(cells)
        if line.count(",") != self.commas or '"' in line or "\n" in line or "\r" in line:
            self.writer.writerow(cells)
        else:
            self.write(line + "\r\n")


def csv_chunks(ctx: ExportContext) -> Iterator[bytes]:
    """Yield the main table as CSV."""
    buffer = ChunkBuffer()
    text = text_writer(buffer)
    writer = csv.writer(text)
    main = ctx.plan.main
    if ctx.options.bom:
        text.write(BOM)
    writer.writerow(main.headers)
    text.flush()
    yield buffer.take()
    stats = ctx.stats
    convert, writerow = main.convert, RowWriter(text, main.width)
    for row in ctx.records():
        writerow(convert(row))
        stats.rows_written += 1
        if buffer.size >= CHUNK_BYTES:
            stats.bytes_out = buffer.total
            yield buffer.take()
    text.flush()
    stats.bytes_out = buffer.total
    yield buffer.take()


class _Spill:
    """A repeat table being written to a temporary file."""

    def __init__(self, ctx: ExportContext, headers: list[str]) -> None:
        self.file = ctx.temporary()
        self.text = text_writer(self.file)
        if ctx.options.bom:
            self.text.write(BOM)
        csv.writer(self.text).writerow(headers)
        self.writerow = RowWriter(self.text, len(headers))

    def rewind(self) -> io.BufferedIOBase:
        """Finish writing and return the file, ready to be read from the start."""
        self.text.flush()
        self.text.detach()
        self.file.seek(0)
        return self.file  # type: ignore[return-value]


def csv_zip_chunks(ctx: ExportContext) -> Iterator[bytes]:
    """Yield a zip of every table (and media and client audit logs when asked)."""
    buffer = ChunkBuffer()
    archive = open_zip(buffer)
    tables = ctx.plan.tables()
    main = tables[0]
    spills: dict[int, tuple[Any, _Spill]] = {}
    for table in tables[1:]:
        spills[id(table)] = (table, _Spill(ctx, table.headers))
    entry = open_entry(archive, main.file_name)
    text = text_writer(entry)
    writer = csv.writer(text)
    if ctx.options.bom:
        text.write(BOM)
    writer.writerow(main.headers)
    yield buffer.take()  # the zip's first bytes leave before any record is read
    stats = ctx.stats
    convert, writerow = main.convert, RowWriter(text, main.width)
    has_repeats = bool(main.children)
    for row in ctx.records():
        writerow(convert(row))
        stats.rows_written += 1
        if has_repeats:
            for table, raw in ctx.repeat_rows(row):
                spills[id(table)][1].writerow(table.convert(raw))
        if buffer.size >= CHUNK_BYTES:
            stats.bytes_out = buffer.total
            yield buffer.take()
    text.close()
    for table, spill in spills.values():
        source = spill.rewind()
        with open_entry(archive, table.file_name) as target:
            yield from copy_file(source, target, buffer)
        source.close()
    if ctx.options.attachments:
        yield from media.media_entries(ctx, archive, buffer, folder="media/")
        if ctx.options.client_audit:
            yield from media.audit_entry(ctx, archive, buffer)
    archive.close()
    stats.bytes_out = buffer.total
    yield buffer.take()
