"""The local-folder blob store: the embedded default, for a laptop or a single machine.

Blobs live at ``<root>/<aa>/<bb>/<sha256>``. A put links the staged file into place (same
file system) or copies it, checks the SHA-256 of what it is about to store, renames it into
place and fsyncs the directory, so a crash right after ``put`` returns loses nothing. For a
programme with many tablets, prefer an S3-compatible store.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from server.files import fsync_directory, open_private, private_dir
from server.storage.base import (
    CHUNK,
    BlobMissing,
    ChecksumMismatch,
    StagedFile,
    StorageUnavailable,
    hash_stream,
    is_sha256,
    read_range,
)


class LocalStore:
    """Blobs as files in a folder."""

    name = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStore({self.root})"

    @classmethod
    def from_url(cls, url: str) -> LocalStore:
        """Open the store a folder path (or ``file://`` URL) names."""
        return cls(url.removeprefix("file://"))

    def path(self, sha256: str) -> Path:
        """Return where the blob named ``sha256`` lives."""
        if not is_sha256(sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, staged: StagedFile) -> None:
        """Store the staged file under its SHA-256; return once it is durable and verified."""
        try:
            self._put(staged)
        except OSError as exc:
            # A full or read-only disk is an outage like any other: the service spools.
            raise StorageUnavailable(f"{self.root}: {exc.strerror or exc}") from exc

    def _put(self, staged: StagedFile) -> None:
        target = self.path(staged.sha256)
        if target.exists() and target.stat().st_size == staged.size:
            return
        private_dir(target.parent)
        # Unique per call: threads of one worker may store the same photo at the same moment.
        temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            try:
                # Same file system: the staged copy (fsync'd as it was written) becomes the
                # stored one, with no second copy of the bytes.
                os.link(staged.path, temp)
            except OSError:
                _copy(staged, temp)
            # Read back what will be stored (from the page cache, for a photo just received):
            # it must hash to its name, whatever happened to the staged file since.
            with temp.open("rb") as stored:
                sha256, _md5, size = hash_stream(stored)
            if sha256 != staged.sha256 or size != staged.size:
                raise ChecksumMismatch(staged.sha256)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        fsync_directory(target.parent)

    def open(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of a blob (``start``..``end`` inclusive), in chunks."""
        path = self.path(sha256)
        try:
            handle = path.open("rb")
        except FileNotFoundError as exc:
            raise BlobMissing(sha256) from exc
        except OSError as exc:
            raise StorageUnavailable(f"{self.root}: {exc.strerror or exc}") from exc
        return read_range(handle, start, end)

    def exists(self, sha256: str) -> bool:
        """Tell whether a blob is stored."""
        return self.path(sha256).exists()

    def size(self, sha256: str) -> int:
        """Return the size of a stored blob (raises :class:`BlobMissing`)."""
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError as exc:
            raise BlobMissing(sha256) from exc

    def delete(self, sha256: str) -> None:
        """Remove a blob if present."""
        self.path(sha256).unlink(missing_ok=True)

    def keys(self) -> Iterator[str]:
        """Yield the SHA-256 of every stored blob."""
        if not self.root.exists():
            return
        for path in self.root.glob("??/??/*"):
            if is_sha256(path.name):
                yield path.name

    def check(self) -> None:
        """Raise :class:`StorageUnavailable` unless the folder can be written."""
        try:
            private_dir(self.root)
            probe = self.root / f".probe.{os.getpid()}.{secrets.token_hex(4)}"
            with open_private(probe, "xb") as handle:
                handle.write(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StorageUnavailable(f"{self.root}: {exc.strerror or exc}") from exc

    def presigned_url(
        self, sha256: str, filename: str, content_type: str, *, inline: bool = False
    ) -> str | None:
        """Return None: a local folder has no URL of its own."""
        return None


def _copy(staged: StagedFile, temp: Path) -> None:
    """Copy a staged file to ``temp`` (on another disk) and fsync it."""
    with staged.open() as source, open_private(temp, "xb") as out:
        while chunk := source.read(CHUNK):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
