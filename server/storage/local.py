"""The local-folder blob store: the embedded default, for a laptop or a single machine.

Blobs live at ``<root>/<aa>/<bb>/<sha256>``. A put links the staged file into place (same
file system) or copies it, fsyncs, and fsyncs the directory, so a crash right after ``put``
returns loses nothing. For a programme with many tablets, prefer an S3-compatible store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from server.storage.base import (
    CHUNK,
    BlobMissing,
    ChecksumMismatch,
    StagedFile,
    StorageUnavailable,
    fsync_directory,
)


class LocalStore:
    """Blobs as files in a folder."""

    name = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, staged: StagedFile) -> None:
        target = self.path(staged.sha256)
        if target.exists() and target.stat().st_size == staged.size:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            os.link(staged.path, temp)
        except OSError:
            shutil.copyfile(staged.path, temp)
            with temp.open("rb+") as handle:
                os.fsync(handle.fileno())
        if temp.stat().st_size != staged.size:
            temp.unlink(missing_ok=True)
            raise ChecksumMismatch(staged.sha256)
        os.replace(temp, target)
        fsync_directory(target.parent)

    def open(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self.path(sha256)
        try:
            handle = path.open("rb")
        except FileNotFoundError as exc:
            raise BlobMissing(sha256) from exc
        return _read_range(handle, start, end)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError as exc:
            raise BlobMissing(sha256) from exc

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def keys(self) -> Iterator[str]:
        if not self.root.exists():
            return
        for path in self.root.glob("??/??/*"):
            if len(path.name) == 64 and not path.name.startswith("."):
                yield path.name

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe.{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StorageUnavailable(f"{self.root}: {exc.strerror or exc}") from exc

    def presigned_url(self, sha256: str, filename: str, content_type: str) -> str | None:
        return None


def _read_range(handle, start: int, end: int | None) -> Iterator[bytes]:
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
