"""The local spool: where attachments wait, durable, while the object store is unreachable.

A tablet's upload is acknowledged only once its files are durable somewhere. When the store
fails, the service puts the staged file here instead (a bounded folder on local disk), and a
drainer moves it to the store once the store answers again. Reads look here first, so a photo
received during an outage can be downloaded at once.

Layout (``MERIT_SPOOL_DIR``)::

    blobs/<sha256>   complete, fsync'd files, named by their content
    tmp/             copies in progress (only when the spool is on another disk than staging)
    corrupt/         files whose bytes no longer match their name, set aside for a human
    lock             serialises additions, so the bound holds across processes

Several gunicorn workers, and several servers on one machine, may share one spool:

* an addition takes the exclusive ``lock`` (``flock``), measures the folder, and links the
  file into ``blobs/`` under its final name; a name, once there, is never replaced;
* a drainer takes a non-blocking ``flock`` on the one file it moves, so two drainers never
  upload the same file at once, and skips files another drainer holds or has just removed;
* a file leaves ``blobs/`` only after the store confirmed it holds the same bytes.

Nothing here counts: sizes are measured from the folder itself, so a crash or a second drainer
can never make a counter drift. ``flock`` is local to one machine: do not share a spool over
NFS between machines.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from server.files import fsync_directory, open_private, private_dir
from server.storage.base import (
    CHUNK,
    BlobMissing,
    BlobStore,
    ChecksumMismatch,
    SpoolFull,
    StagedFile,
    StorageError,
    StorageUnavailable,
    hash_stream,
    is_sha256,
    read_range,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpoolEntry:
    """One file waiting in the spool."""

    sha256: str
    size: int
    spooled_at: dt.datetime


@dataclass(frozen=True)
class SpoolReport:
    """What the spool holds: files, bytes, the oldest file's age, and the bound."""

    files: int
    bytes: int
    oldest: dt.datetime | None
    max_bytes: int
    corrupt: int


@dataclass
class DrainReport:
    """What one pass of a drainer did."""

    moved: int = 0
    bytes: int = 0
    skipped: int = 0
    corrupt: list[str] = field(default_factory=list)
    error: str | None = None


class Spool:
    """A bounded folder of blobs waiting for the store."""

    def __init__(self, directory: str | Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.blob_dir = self.directory / "blobs"
        self.tmp_dir = self.directory / "tmp"
        self.corrupt_dir = self.directory / "corrupt"

    def path(self, sha256: str) -> Path:
        """Return where a spooled blob lives."""
        if not is_sha256(sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.blob_dir / sha256

    # ---- adding ----------------------------------------------------------------------------

    def add(self, staged: StagedFile) -> bool:
        """Make a staged file durable in the spool; return False if it was already there.

        Raises :class:`SpoolFull` when it would take the spool over its bound, and
        :class:`StorageUnavailable` when the spool itself cannot be written.
        """
        try:
            with self._locked():
                target = self.path(staged.sha256)
                if target.exists():
                    return False
                used = self._used_bytes()
                if used + staged.size > self.max_bytes:
                    raise SpoolFull(
                        f"spool holds {used} bytes; {staged.size} more would pass its bound "
                        f"of {self.max_bytes}"
                    )
                self._link_into_place(staged, target)
                return True
        except OSError as exc:
            raise StorageUnavailable(f"spool {self.directory}: {exc.strerror or exc}") from exc

    def check(self) -> None:
        """Raise :class:`StorageUnavailable` unless the spool can be locked and written."""
        try:
            with self._locked():
                probe = self.tmp_dir / f"probe.{os.getpid()}.{secrets.token_hex(4)}"
                with open_private(probe, "xb") as handle:
                    handle.write(b"ok")
                    handle.flush()
                    os.fsync(handle.fileno())
                probe.unlink()
        except OSError as exc:
            raise StorageUnavailable(f"spool {self.directory}: {exc.strerror or exc}") from exc

    def _link_into_place(self, staged: StagedFile, target: Path) -> None:
        try:
            # The staged file was fsync'd as it was written: linking it is enough.
            os.link(staged.path, target)
        except FileExistsError:
            pass  # same name, same content
        except OSError:
            # Another disk (or a file system without hard links): copy, fsync, check, then
            # link the complete copy into place.
            temp = self.tmp_dir / f"{staged.sha256}.{os.getpid()}.{secrets.token_hex(4)}"
            try:
                with staged.open() as source, open_private(temp, "xb") as out:
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                with temp.open("rb") as copy:
                    if hash_stream(copy)[0] != staged.sha256:
                        raise ChecksumMismatch(staged.sha256) from None
                os.link(temp, target)
            finally:
                temp.unlink(missing_ok=True)
        fsync_directory(self.blob_dir)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the spool's exclusive lock (between threads and processes alike)."""
        for folder in (self.blob_dir, self.tmp_dir, self.corrupt_dir):
            private_dir(folder)
        # Each call opens its own file description, so threads of one process exclude each
        # other too (flock locks belong to the open file description).
        with open_private(self.directory / "lock", "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                # Copies in progress only exist while their writer holds this lock: any found
                # now were left by a crash.
                for leftover in self.tmp_dir.iterdir():
                    leftover.unlink(missing_ok=True)
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _used_bytes(self) -> int:
        return sum(entry.size for entry in self.entries())

    # ---- reading ---------------------------------------------------------------------------

    def entries(self) -> list[SpoolEntry]:
        """List the blobs waiting, oldest first."""
        found = []
        try:
            scan = os.scandir(self.blob_dir)
        except FileNotFoundError:
            return []
        with scan:
            for entry in scan:
                if not is_sha256(entry.name):
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue  # drained while we looked
                when = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC)
                found.append(SpoolEntry(entry.name, stat.st_size, when))
        found.sort(key=lambda e: e.spooled_at)
        return found

    def is_empty(self) -> bool:
        """Tell whether nothing waits (cheap: reads one directory entry)."""
        try:
            with os.scandir(self.blob_dir) as scan:
                return not any(is_sha256(entry.name) for entry in scan)
        except (FileNotFoundError, NotADirectoryError):
            # No spool folder (yet, or a misconfigured path): nothing can be waiting in it;
            # check() reports the misconfiguration.
            return True

    def contains(self, sha256: str) -> bool:
        """Tell whether a blob waits here."""
        return self.path(sha256).exists()

    def size(self, sha256: str) -> int:
        """Return a spooled blob's size (raises :class:`BlobMissing`)."""
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError as exc:
            raise BlobMissing(sha256) from exc

    def open(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield a spooled blob's bytes (``start``..``end`` inclusive); BlobMissing if absent.

        The file is opened before this returns: a drainer removing it afterwards does not cut
        the download short (the open file stays readable).
        """
        try:
            handle = self.path(sha256).open("rb")
        except FileNotFoundError as exc:
            raise BlobMissing(sha256) from exc
        return read_range(handle, start, end)

    def report(self) -> SpoolReport:
        """Summarise what waits in the spool."""
        entries = self.entries()
        try:
            corrupt = sum(1 for _ in self.corrupt_dir.iterdir())
        except FileNotFoundError:
            corrupt = 0
        return SpoolReport(
            files=len(entries),
            bytes=sum(e.size for e in entries),
            oldest=entries[0].spooled_at if entries else None,
            max_bytes=self.max_bytes,
            corrupt=corrupt,
        )

    # ---- draining --------------------------------------------------------------------------

    def drain_to(self, store: BlobStore) -> DrainReport:
        """Move every spooled blob it can to ``store``, oldest first.

        Stops at the first sign the store is still unreachable (the report says why). Blobs
        another drainer is moving are skipped, not waited for.
        """
        report = DrainReport()
        for entry in self.entries():
            try:
                moved = self._move(entry.sha256, store)
            except StorageUnavailable as exc:
                report.error = str(exc)
                break
            except ChecksumMismatch:
                report.corrupt.append(entry.sha256)
                continue
            except StorageError as exc:
                # Refused by the store for a reason of its own: keep the file, try the others.
                log.error("spooled blob %s refused by the store: %s", entry.sha256, exc)
                report.error = str(exc)
                report.skipped += 1
                continue
            if moved:
                report.moved += 1
                report.bytes += entry.size
            else:
                report.skipped += 1
        return report

    def _move(self, sha256: str, store: BlobStore) -> bool:
        """Upload one spooled blob and remove it; False if another drainer has it."""
        path = self.path(sha256)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return False  # another drainer moved it
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # another drainer is moving it right now
            # Moved by another drainer between our open and our lock (and perhaps spooled
            # again since, as a new file under the same name)? Then it is not ours to move.
            # Link counts cannot tell: a local store hard-links the very same inode.
            held = os.fstat(handle.fileno())
            try:
                named = os.stat(path)
            except FileNotFoundError:
                return False
            if (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
                return False
            actual, md5, size = hash_stream(handle)
            if actual != sha256:
                self._set_aside(path, sha256, actual)
                raise ChecksumMismatch(sha256)
            store.put(StagedFile(path, sha256, md5, size))
            # The store holds the bytes now: only then may the spool forget them. The name
            # still points at the file we hold: only a drainer holding its lock removes it.
            path.unlink(missing_ok=True)
        return True

    def _set_aside(self, path: Path, sha256: str, actual: str) -> None:
        log.error(
            "spooled blob %s has changed on disk (its bytes hash to %s); moved to %s",
            sha256,
            actual,
            self.corrupt_dir,
        )
        private_dir(self.corrupt_dir)
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, self.corrupt_dir / f"{sha256}.{int(time.time())}")


class Drainer:
    """A daemon thread that empties the spool into the store, then stops.

    One per process, started lazily by :meth:`kick` (after a file is spooled, or when a
    request finds the spool not empty). While the store stays unreachable it retries with a
    growing wait; a kick wakes it at once.
    """

    def __init__(
        self,
        spool: Spool,
        store: BlobStore,
        *,
        on_moved: Callable[[], None] | None = None,
        min_wait: float = 1.0,
        max_wait: float = 60.0,
    ) -> None:
        self.spool = spool
        self.store = store
        self.on_moved = on_moved
        self.min_wait = min_wait
        self.max_wait = max_wait
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.last_report: DrainReport | None = None

    def kick(self) -> None:
        """Start the drainer if it is not running, and wake it if it waits."""
        with self._lock:
            if self._pid != os.getpid():
                # Forked (a gunicorn worker): the parent's thread does not exist here.
                self._pid, self._thread = os.getpid(), None
            if self._thread is None or not self._thread.is_alive():
                self._idle.clear()
                self._thread = threading.Thread(
                    target=self._run, name="merit-spool-drainer", daemon=True
                )
                self._thread.start()
            self._wake.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the drainer has emptied the spool and stopped; False on timeout."""
        return self._idle.wait(timeout)

    @property
    def running(self) -> bool:
        """Tell whether the drainer thread is alive in this process."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        wait = self.min_wait
        try:
            while True:
                self._wake.clear()
                report = self.spool.drain_to(self.store)
                self.last_report = report
                if report.moved:
                    log.info(
                        "spool: moved %s blobs (%s bytes) to the store", report.moved, report.bytes
                    )
                    if self.on_moved:
                        self.on_moved()
                # Decide to stop under the lock: a kick after a new file was spooled either
                # sees this thread gone (and starts another) or this thread sees the file.
                with self._lock:
                    if self.spool.is_empty():
                        self._thread = None
                        self._idle.set()
                        return
                wait = min(wait * 2, self.max_wait) if report.error else self.min_wait
                if report.error:
                    log.warning(
                        "spool: store still unreachable (%s); next try in %.0f s",
                        report.error,
                        wait,
                    )
                self._wake.wait(wait)
        except Exception:
            log.exception("spool drainer stopped on an unexpected error")
            with self._lock:
                self._thread = None
                self._idle.set()
