"""Byte plumbing for streamed exports: a chunk buffer, a zip written as it goes.

Writers write into a :class:`ChunkBuffer`; the export's generator takes what has piled up
every so often (about 64 KiB) and yields it, so the response starts with the first rows and the
memory held is one chunk, not the export. Zips are written by the standard library's
:mod:`zipfile` onto that unseekable buffer: each entry gets a data descriptor after its data,
so nothing is ever rewritten, and entries use ZIP64 so that a table may exceed 4 GiB.

Entry names are paths that unzip tools follow: a tablet's file name ``../../x`` would put the
file wherever the analyst's tool lets it. Every name a client chose becomes one segment through
:func:`entry_segment`, and :func:`open_entry`, which every entry of every export goes through,
refuses a name that could leave the archive's folder.
"""

from __future__ import annotations

import io
import time
import unicodedata
import zipfile
from collections.abc import Iterator

CHUNK_BYTES = 64 * 1024
# Deflate level 1: CSV compresses almost as well as at 6, at several times the speed.
LEVEL = 1


class ChunkBuffer(io.RawIOBase):
    """A write-only byte sink whose contents are taken away in chunks."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self.size = 0
        self.total = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        """Keep a copy of ``data``."""
        chunk = bytes(data)
        if chunk:
            self._parts.append(chunk)
            self.size += len(chunk)
            self.total += len(chunk)
        return len(chunk)

    def take(self) -> bytes:
        """Return and forget everything written so far."""
        data = b"".join(self._parts)
        self._parts = []
        self.size = 0
        return data

    def ready(self) -> bool:
        """Tell whether a chunk is worth sending."""
        return self.size >= CHUNK_BYTES


def open_zip(buffer: ChunkBuffer) -> zipfile.ZipFile:
    """Open a zip written straight onto ``buffer`` (unseekable: data descriptors, ZIP64)."""
    return zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=LEVEL)


def entry_segment(name: str) -> str:
    """Return a name a client chose as one path segment that stays where it is put.

    Slashes, backslashes and control characters become ``_``, and so do the dots of a name
    made of dots only (``..``): whatever the database holds, records stored before intake
    refused such names included, the segment names a file in its folder, never a folder.
    """
    segment = "".join(
        "_" if ch in "/\\" or unicodedata.category(ch)[0] == "C" else ch for ch in name
    )
    if not segment.strip("."):
        segment = "_" * max(len(segment), 1)
    return segment


def _contained(name: str) -> bool:
    """Tell whether an entry name is a relative path that stays inside the archive's folder."""
    return (
        not name.startswith("/")
        and "\\" not in name
        and all(part not in ("", ".", "..") for part in name.split("/"))
        and not any(unicodedata.category(ch)[0] == "C" for ch in name)
    )


def open_entry(archive: zipfile.ZipFile, name: str) -> io.BufferedIOBase:
    """Open a new zip entry for writing, dated now (ValueError: a name leaving the folder)."""
    if not _contained(name):
        # Names from clients go through entry_segment; reaching this is a bug, not an input.
        raise ValueError(f"unsafe zip entry name {name!r}")
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info._compresslevel = LEVEL  # type: ignore[attr-defined]  # no public setter on 3.11
    info.external_attr = 0o644 << 16
    return archive.open(info, "w", force_zip64=True)


def text_writer(binary: io.BufferedIOBase | io.RawIOBase) -> io.TextIOWrapper:
    """Wrap a byte stream for the csv module: UTF-8, no newline translation."""
    return io.TextIOWrapper(binary, encoding="utf-8", newline="", write_through=False)


def copy_file(
    source: io.BufferedIOBase, target: io.BufferedIOBase, buffer: ChunkBuffer
) -> Iterator[bytes]:
    """Copy a temporary file into a zip entry, yielding the buffer's chunks as they fill."""
    while True:
        block = source.read(CHUNK_BYTES)
        if not block:
            return
        target.write(block)
        if buffer.ready():
            yield buffer.take()
