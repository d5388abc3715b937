"""Private files and folders: what the server writes on disk, no other local account reads.

The data folder holds the database (every account's Digest HA1, a password equivalent), the
generated secret key, the first administrator's password, attachments (photos of faces),
staging, the spool; a backup holds all of it. Every folder the server makes is 0700 and every
file 0600, whatever the umask it was started with (issue 16). Every file or folder the server
creates goes through this module, so that a new one cannot forget the mode:

    private_dir(path)              make a folder (and its missing parents) 0700
    open_private(path, mode)       open a file for writing, created 0600 (or tightened to it)
    write_private(path, data)      write a whole file atomically (temporary file, then rename)
    private_temp(folder, prefix)   a new, uniquely named temporary file, 0600
    scratch_dir(parent, prefix)    a private temporary folder, removed with what it holds
    ensure_private(path)           create an empty file 0600 unless it is there

``restrict_umask`` (called by ``merit`` and the gunicorn configuration) covers what other
libraries create (prometheus_client's files) as defence in depth; the modes above do not rely
on it. ``private_places`` names the places that must stay private; ``tighten_places`` brings an
install made before this rule to it at start (``merit serve``, ``merit setup``), and ``loose``
tells ``merit doctor`` what is still open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# Group and other: the bits no file or folder of the server may carry.
OPEN_BITS = 0o077
UMASK = 0o077
# Files SQLite keeps beside a database, with the database's own mode.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def restrict_umask() -> int:
    """Make what this process and its children create private by default; return the old mask."""
    return os.umask(UMASK)


def private_dir(path: str | Path) -> Path:
    """Create ``path`` and its missing parents as 0700; return it.

    A folder already there is left as it is: :func:`tighten_places` brings the server's own
    places to the rule at start, and logs it; ``merit doctor`` reports what is still open.
    """
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:
            continue  # another process made it meanwhile
        os.chmod(folder, PRIVATE_DIR)  # a umask may have taken the owner's bits too
    return path


_FLAGS = {
    "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
}


def open_private(path: str | Path, mode: str = "xb", *, encoding: str | None = None) -> IO[Any]:
    """Open ``path`` for writing (``mode``: x, w or a, with b or t); the file is 0600.

    A new file is created 0600; one already there (``w``, ``a``: the server's own, rewritten
    or appended to) is tightened to 0600. Links are not followed: the name must be the file.
    """
    kind = mode.replace("b", "").replace("t", "")
    if kind not in _FLAGS:
        raise ValueError(f"open_private writes only: x, w or a, not {mode!r}")
    flags = _FLAGS[kind] | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
        return os.fdopen(fd, mode, encoding=None if "b" in mode else (encoding or "utf-8"))
    except BaseException:
        os.close(fd)
        raise


def private_temp(folder: str | Path, prefix: str) -> tuple[IO[bytes], Path]:
    """Create a new file with a unique name in ``folder`` (made private); return it and its path."""
    folder = private_dir(folder)
    for _attempt in range(100):
        path = folder / f"{prefix}{secrets.token_hex(8)}"
        try:
            return open_private(path, "xb"), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


@contextlib.contextmanager
def scratch_dir(parent: str | Path, prefix: str) -> Iterator[Path]:
    """Yield a new private folder in ``parent``; remove it at the end.

    ``parent`` is made (0700) if missing, and otherwise left as it is: it may be the
    operator's folder (``merit backup /srv/backups``).
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=private_dir(parent)))
    try:
        os.chmod(folder, PRIVATE_DIR)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_private(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a private temporary file, fsync'd, renamed."""
    path = Path(path)
    handle, temp = private_temp(path.parent, f".{path.name}.")
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def ensure_private(path: str | Path) -> Path:
    """Create ``path`` empty and 0600 unless it exists.

    For files another library opens itself (SQLite makes its journal, WAL and shared-memory
    files with the database file's mode).
    """
    path = Path(path)
    with contextlib.suppress(FileExistsError):
        open_private(path, "xb").close()
    return path


def fsync_directory(directory: str | Path) -> None:
    """Make a rename or link inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- existing files: what an older version (or an operator) left open --------------------------


def _wanted(mode: int) -> int:
    return PRIVATE_DIR if stat.S_ISDIR(mode) else PRIVATE_FILE


def _ours(status: os.stat_result) -> bool:
    """Tell whether this process may and should change an entry's mode.

    Never a sticky folder (/tmp and the like: shared on purpose), never another user's.
    """
    if stat.S_ISDIR(status.st_mode) and status.st_mode & stat.S_ISVTX:
        return False
    return status.st_uid == os.geteuid()


def _tighten_one(path: Path) -> tuple[int, int] | None:
    """Take group and other bits off ``path``; log it and return (old, new) if it changed."""
    try:
        status = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(status.st_mode) or not status.st_mode & OPEN_BITS or not _ours(status):
        return None
    old = stat.S_IMODE(status.st_mode)
    new = old & ~OPEN_BITS | (_wanted(status.st_mode) & 0o700)
    os.chmod(path, new)
    log.warning(
        "made %s private (mode %04o, was %04o: other local accounts could read it)", path, new, old
    )
    return old, new


def entries(root: str | Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Yield ``root`` and everything under it (links not followed), with their status."""
    root = Path(root)
    try:
        yield root, root.lstat()
    except FileNotFoundError:
        return
    for folder, folders, names in os.walk(root):
        for name in folders + names:
            path = Path(folder, name)
            try:
                yield path, path.lstat()
            except FileNotFoundError:
                continue  # gone meanwhile (a staged upload, a drained blob)


def tighten(root: str | Path) -> list[tuple[Path, int, int]]:
    """Make ``root`` and everything under it private; return what changed (path, old, new)."""
    changed = []
    for path, status in entries(root):
        if stat.S_ISLNK(status.st_mode) or not status.st_mode & OPEN_BITS:
            continue
        done = _tighten_one(path)
        if done:
            changed.append((path, *done))
    return changed


def loose(root: str | Path) -> list[tuple[Path, os.stat_result]]:
    """List what under ``root`` (itself included) another account could read or enter."""
    return [
        (path, status)
        for path, status in entries(root)
        if not stat.S_ISLNK(status.st_mode) and status.st_mode & OPEN_BITS
    ]


def private_places(config: Mapping[str, Any]) -> dict[str, list[Path]]:
    """Name every place the server keeps on this machine that must stay private, by role.

    The data folder (staging, the first administrator's password...), the SQLite database
    (with the files SQLite keeps beside it), the secret key, the attachment folder, the spool
    and the backups folder; each may lie inside the data folder or elsewhere.
    """
    data = Path(config["DATA_DIR"])
    places = {"data folder": [data]}
    database = sqlite_path(config["DATABASE_URL"])
    if database is not None:
        sides = [database.with_name(database.name + side) for side in SQLITE_SIDE_FILES]
        places["database"] = [database, *sides]
    places["secret key"] = [data / "secret_key"]
    storage = config["STORAGE_URL"]
    if not storage.startswith("s3://"):
        places["attachments"] = [Path(storage.removeprefix("file://"))]
    places["spool"] = [Path(config["SPOOL_DIR"])]
    if config.get("BACKUP_DIR"):
        places["backups"] = [Path(config["BACKUP_DIR"])]
    return places


def sqlite_path(url: str) -> Path | None:
    """Return the file a SQLite URL names (None for another database or an in-memory one)."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def tighten_places(config: Mapping[str, Any]) -> list[tuple[Path, int, int]]:
    """Make every private place and all it holds private; return what changed (logged)."""
    changed = []
    for paths in private_places(config).values():
        for path in paths:
            changed += tighten(path)
    return changed
