"""The BlobStore contract every backend meets, and the staging of incoming files.

Blobs are named by the SHA-256 of their bytes. A backend's :meth:`BlobStore.put` returns only
once the bytes are durable (fsync'd on disk, or acknowledged by the object store with a
matching checksum); callers commit database rows that reference a blob only after that.

Incoming files are first *staged*: copied once, in chunks, to a temporary file in the data
folder while their SHA-256 and MD5 are computed. Nothing is ever read whole into memory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

CHUNK = 1024 * 1024


class StorageError(Exception):
    """The blob store failed in a way the caller cannot fix."""


class StorageUnavailable(StorageError):
    """The blob store cannot be reached right now; try again later."""


class BlobMissing(StorageError):
    """No blob with that SHA-256 is stored."""


class ChecksumMismatch(StorageError):
    """The bytes stored do not have the SHA-256 they were stored under."""


@dataclass
class StagedFile:
    """A file copied to local disk, with its hashes and size, ready to be stored."""

    path: Path
    sha256: str
    md5: str
    size: int

    def open(self) -> BinaryIO:
        return self.path.open("rb")

    def discard(self) -> None:
        """Remove the staged copy (the store keeps its own)."""
        self.path.unlink(missing_ok=True)


def stage(stream: BinaryIO, directory: Path, *, limit: int | None = None) -> StagedFile:
    """Copy ``stream`` to a new file in ``directory``, hashing as it goes; fsync it.

    Raises ``ValueError`` if more than ``limit`` bytes arrive.
    """
    directory.mkdir(parents=True, exist_ok=True)
    # MD5 is what ODK manifests and form lists compare (openrosa.md §2-3), not a security check.
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    fd, name = tempfile.mkstemp(prefix="stage-", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if limit is not None and size > limit:
                    raise ValueError(f"more than {limit} bytes")
                sha256.update(chunk)
                md5.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return StagedFile(path, sha256.hexdigest(), md5.hexdigest(), size)


def stage_bytes(data: bytes, directory: Path) -> StagedFile:
    """Stage bytes already in memory (small files: form XML, spreadsheets in tests)."""
    import io

    return stage(io.BytesIO(data), directory)


def fsync_directory(directory: Path) -> None:
    """Make a rename or link inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore(Protocol):
    """What every storage backend provides."""

    name: str

    def put(self, staged: StagedFile) -> None:
        """Store the staged file under its SHA-256; return once it is durable."""

    def open(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of a blob (``start``..``end`` inclusive), in chunks."""

    def exists(self, sha256: str) -> bool:
        """Tell whether a blob is stored."""

    def size(self, sha256: str) -> int:
        """Return the size of a stored blob (raises :class:`BlobMissing`)."""

    def delete(self, sha256: str) -> None:
        """Remove a blob if present."""

    def keys(self) -> Iterator[str]:
        """Yield the SHA-256 of every stored blob."""

    def check(self) -> None:
        """Raise :class:`StorageUnavailable` unless the store can be read and written."""

    def presigned_url(self, sha256: str, filename: str, content_type: str) -> str | None:
        """Return a short-lived URL clients can download from, or None if not supported."""
