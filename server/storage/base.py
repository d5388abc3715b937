"""The BlobStore contract every backend meets, and the staging of incoming files.

Blobs are named by the SHA-256 of their bytes. A backend's :meth:`BlobStore.put` returns only
once the bytes are durable (fsync'd on disk, or acknowledged by the object store with a
matching checksum); callers commit database rows that reference a blob only after that.

Incoming files are first *staged*: copied once, in chunks, to a private temporary file in the
data folder while their SHA-256 and MD5 are computed. Nothing is ever read whole into memory.

    StorageError            the store failed in a way the caller cannot fix
     ├── StorageUnavailable the store cannot be reached now (the service spools instead)
     │    └── SpoolFull     ... and the local spool has no room left either
     ├── BlobMissing        no blob with that SHA-256
     └── ChecksumMismatch   bytes do not hash to the name they were stored under
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote

from server import files

CHUNK = 1024 * 1024


class StorageError(Exception):
    """The blob store failed in a way the caller cannot fix."""


class StorageUnavailable(StorageError):
    """The blob store cannot be reached right now; try again later."""


class SpoolFull(StorageUnavailable):
    """The store is unreachable and the local spool has reached its bound."""


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
        """Open the staged copy for reading."""
        return self.path.open("rb")

    @classmethod
    def from_path(cls, path: Path) -> StagedFile:
        """Describe a file already on local disk, hashing it (in chunks)."""
        with path.open("rb") as handle:
            sha256, md5, size = hash_stream(handle)
        return cls(path, sha256, md5, size)

    def discard(self) -> None:
        """Remove the staged copy (the store keeps its own)."""
        self.path.unlink(missing_ok=True)


def stage(stream: BinaryIO, directory: Path, *, limit: int | None = None) -> StagedFile:
    """Copy ``stream`` to a new file in ``directory``, hashing as it goes; fsync it.

    Raises ``ValueError`` if more than ``limit`` bytes arrive.
    """
    # MD5 is what ODK manifests and form lists compare (openrosa.md §2-3), not a security check.
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    out, path = files.private_temp(directory, "stage-")
    try:
        with out:
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


def hash_stream(stream: BinaryIO) -> tuple[str, str, int]:
    """Return the SHA-256, MD5 and size of what ``stream`` yields, reading it in chunks."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    while chunk := stream.read(CHUNK):
        size += len(chunk)
        sha256.update(chunk)
        md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest(), size


def is_sha256(value: str) -> bool:
    """Tell whether ``value`` is a lowercase SHA-256 hex digest (the only names blobs have)."""
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def content_disposition(filename: str, *, inline: bool = False) -> str:
    """Build a Content-Disposition value with an ASCII fallback and a UTF-8 ``filename*``.

    RFC 6266 and RFC 5987: old clients read ``filename``, every current one ``filename*``,
    which keeps names like ``Enquête_Ségou.jpg`` intact (central-backend #389).
    """
    # Path separators and control characters never belong in a name a browser saves under.
    cleaned = "".join("_" if c in "/\\" or ord(c) < 32 or ord(c) == 127 else c for c in filename)
    cleaned = cleaned.strip() or "download"
    fallback = "".join(c if 32 <= ord(c) < 127 else "_" for c in cleaned)
    fallback = fallback.replace("\\", "_").replace('"', "_")
    encoded = quote(cleaned, safe="!#$&+-.^_`|~")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def read_range(handle: BinaryIO, start: int, end: int | None) -> Iterator[bytes]:
    """Yield bytes ``start``..``end`` (inclusive) of an open file, then close it."""
    with handle:
        handle.seek(start)
        remaining = None if end is None else end - start + 1
        while remaining is None or remaining > 0:
            chunk = handle.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk


def stage_bytes(data: bytes, directory: Path) -> StagedFile:
    """Stage bytes already in memory (small files: form XML, spreadsheets in tests)."""
    import io

    return stage(io.BytesIO(data), directory)


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

    def presigned_url(
        self, sha256: str, filename: str, content_type: str, *, inline: bool = False
    ) -> str | None:
        """Return a short-lived URL clients can download from, or None if not supported."""
