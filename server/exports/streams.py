"""Byte plumbing for streamed exports: a chunk buffer, a zip written as it goes, gzip.

Writers write into a :class:`ChunkBuffer`; the export's generator takes what has piled up
every so often (about 64 KiB) and yields it, so the response starts with the first rows and the
memory held is one chunk, not the export. Zips are written by the standard library's
:mod:`zipfile` onto that unseekable buffer: each entry gets a data descriptor after its data,
so nothing is ever rewritten, and entries use ZIP64 so that a table may exceed 4 GiB.
"""

from __future__ import annotations

import io
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator

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


def open_entry(archive: zipfile.ZipFile, name: str) -> io.BufferedIOBase:
    """Open a new zip entry for writing, dated now."""
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


def gzip_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Compress a stream of chunks as one gzip member, chunk by chunk."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()
