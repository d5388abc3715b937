"""Storage operations behind ``merit storage``: migrate between backends, verify every blob.

Both walk the catalogue (the ``blobs`` table, which every form version, form attachment and
submission attachment references) in id order, one blob at a time, streaming: memory does not
grow with the number or size of blobs.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.storage import services
from server.storage.base import BlobMissing, BlobStore, StorageError, StorageUnavailable, stage
from server.storage.models import Blob


@dataclass
class MigrationReport:
    """What a migration did: blobs copied, already there, and failed (sha256, reason)."""

    copied: int = 0
    present: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    stopped: str | None = None


@dataclass(frozen=True)
class BlobProblem:
    """A catalogued blob whose bytes are missing or wrong."""

    sha256: str
    kind: str  # missing | size | checksum | unreachable
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.sha256} {self.detail}"


@dataclass
class VerifyReport:
    """What a verification found."""

    checked: int = 0
    problems: list[BlobProblem] = field(default_factory=list)


def catalogue(db_session: Session) -> Iterator[Blob]:
    """Yield every catalogued blob, oldest first, a batch at a time."""
    query = sa.select(Blob).order_by(Blob.id).execution_options(yield_per=500)
    yield from db_session.scalars(query)


def migrate(
    db_session: Session,
    target: BlobStore,
    *,
    progress: Callable[[Blob, str], None] | None = None,
) -> MigrationReport:
    """Copy every catalogued blob from the current store (and spool) to ``target``.

    Resumable: blobs the target already holds with the right size are skipped, so running it
    again after an interruption continues where it stopped. Each copy is staged and hashed on
    the way, and must hash to its name before the target is given it; the target verifies its
    own write. The current store is left untouched. Stops early if either side is unreachable.
    """
    report = MigrationReport()
    target.check()
    for blob in catalogue(db_session):
        try:
            state = _copy(blob, target)
        except StorageUnavailable as exc:
            report.stopped = str(exc)
            break
        except StorageError as exc:
            report.failed.append((blob.sha256, str(exc) or type(exc).__name__))
            state = "failed"
        if state == "copied":
            report.copied += 1
        elif state == "present":
            report.present += 1
        if progress:
            progress(blob, state)
    return report


def _copy(blob: Blob, target: BlobStore) -> str:
    try:
        if target.size(blob.sha256) == blob.size:
            return "present"
    except BlobMissing:
        pass
    try:
        source = services.read(blob)
    except BlobMissing as exc:
        raise BlobMissing(f"{blob.sha256} is in neither the current store nor the spool") from exc
    staged = stage(ChunkReader(source), services.staging_dir())
    try:
        if staged.sha256 != blob.sha256 or staged.size != blob.size:
            raise StorageError(
                f"the current copy is damaged (hashes to {staged.sha256}, {staged.size} bytes)"
            )
        target.put(staged)
    finally:
        staged.discard()
    return "copied"


def verify(
    db_session: Session,
    *,
    quick: bool = False,
    progress: Callable[[Blob, BlobProblem | None], None] | None = None,
) -> VerifyReport:
    """Check that every catalogued blob is in the spool or the store with the right bytes.

    ``quick`` compares sizes only (no download); otherwise every blob is read and its SHA-256,
    MD5 and size compared with the catalogue.
    """
    report = VerifyReport()
    for blob in catalogue(db_session):
        problem = _verify_one(blob, quick=quick)
        report.checked += 1
        if problem:
            report.problems.append(problem)
        if progress:
            progress(blob, problem)
    return report


def _verify_one(blob: Blob, *, quick: bool) -> BlobProblem | None:
    try:
        if quick:
            where = services.location(blob.sha256)
            if where is None:
                return BlobProblem(blob.sha256, "missing", "in neither the store nor the spool")
            owner = services.spool() if where == "spool" else services.store()
            size = owner.size(blob.sha256)
            if size != blob.size:
                return BlobProblem(blob.sha256, "size", f"{size} bytes, catalogue {blob.size}")
            return None
        sha256, md5, size = hash_chunks(services.read(blob))
    except BlobMissing:
        return BlobProblem(blob.sha256, "missing", "in neither the store nor the spool")
    except StorageError as exc:
        return BlobProblem(blob.sha256, "unreachable", str(exc))
    if size != blob.size:
        return BlobProblem(blob.sha256, "size", f"{size} bytes, catalogue {blob.size}")
    if sha256 != blob.sha256 or md5 != blob.md5:
        return BlobProblem(blob.sha256, "checksum", f"bytes hash to {sha256}")
    return None


def hash_chunks(chunks: Iterable[bytes]) -> tuple[str, str, int]:
    """Return the SHA-256, MD5 and size of a stream of chunks."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    for chunk in chunks:
        size += len(chunk)
        sha256.update(chunk)
        md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest(), size


class ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (to stage a blob from a store)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        """Say this file can be read."""
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        """Fill ``buffer`` from the chunks; return how many bytes were put in."""
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        """Close the underlying iterator (the store's connection) too."""
        close = getattr(self._chunks, "close", None)
        if close:
            close()
        super().close()
