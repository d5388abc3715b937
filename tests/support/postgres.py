"""A private PostgreSQL cluster for tests that restart or crash the database on purpose.

The shared server at 127.0.0.1:5432 serves every other test and must never be restarted; a
test that needs PostgreSQL to go away and come back gets a cluster of its own instead:
``initdb`` into a temporary folder, ``pg_ctl start`` on a free port, its unix socket in that
folder too. Nothing outside the folder is touched.

    cluster = PrivateCluster(tmp_path / "pg").start()
    url = cluster.create_database("merit")      # postgresql://postgres@127.0.0.1:<port>/merit
    cluster.restart_fast()                       # pg_ctl restart -m fast
    cluster.crash_and_start()                    # kill -9 of the postmaster, crash recovery
    cluster.destroy()

PostgreSQL refuses to run as root; when the tests run as root (containers), every command runs
as the ``postgres`` system user, which then owns the folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import sqlalchemy as sa

from tests.support.servers import free_port

BIN_DIRS = (
    os.environ.get("MERIT_PG_BIN", ""),
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
)


def pg_bin_dir() -> Path:
    """Return the folder holding initdb and pg_ctl (MERIT_PG_BIN, Debian's paths, or PATH)."""
    for folder in BIN_DIRS:
        if folder and (Path(folder) / "initdb").is_file():
            return Path(folder)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("initdb not found: install PostgreSQL or set MERIT_PG_BIN")


class PrivateCluster:
    """A throw-away PostgreSQL cluster in one folder, on its own port."""

    def __init__(self, directory: Path, *, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.data = self.directory / "data"
        self.sockets = self.directory / "sockets"
        self.log_path = self.directory / "postgres.log"
        self.port = port or free_port()
        self.bin = pg_bin_dir()
        self._as_postgres = os.geteuid() == 0

    # ---- running commands ----------------------------------------------------------------

    def _run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """Run one of PostgreSQL's programs (as postgres when we are root)."""
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def _options(self) -> str:
        """Return the postmaster's options."""
        # TCP on loopback only, the socket in our folder (never /var/run/postgresql, which the
        # shared server uses), and enough connections for a server's pools and a checker.
        return (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c shared_buffers=64MB"
        )

    # ---- life cycle ------------------------------------------------------------------------

    def start(self) -> PrivateCluster:
        """Create the cluster on first use, then start it and wait until it accepts connections."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if self._as_postgres:
            _let_postgres_through(self.directory)
            shutil.chown(self.directory, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self, timeout: float = 60) -> None:
        """Start the postmaster, retrying while a crashed one's backends linger."""
        deadline = time.monotonic() + timeout
        while True:
            result = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.log_path),
                "-o",
                self._options(),
                "-w",
                "-t",
                "30",
                "start",
                check=False,
            )
            if result.returncode == 0:
                return
            # After a kill -9 the old backends hold the shared memory until they notice their
            # postmaster is gone; starting again succeeds once they have.
            if time.monotonic() > deadline:
                raise RuntimeError(f"pg_ctl start failed: {result.stderr}{self.log()}")
            time.sleep(0.5)

    def restart_fast(self) -> None:
        """Restart as an operator would: ``pg_ctl restart -m fast`` (sessions are cut)."""
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            self._options(),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
            "restart",
        )

    def postmaster_pid(self) -> int | None:
        """Return the running postmaster's pid, from its pid file."""
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (FileNotFoundError, ValueError, IndexError, PermissionError):
            return None

    def crash_and_start(self) -> None:
        """kill -9 the postmaster, wait for its backends to go, start again (crash recovery)."""
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 30)
        self._pg_ctl_start()

    def stop(self) -> None:
        """Stop the cluster at once (its data is thrown away afterwards anyway)."""
        if self.postmaster_pid() is not None:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def destroy(self) -> None:
        """Stop the cluster and remove its folder."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    # ---- databases -------------------------------------------------------------------------

    @property
    def admin_url(self) -> str:
        """URL of the cluster's ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        """URL of one database of the cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a database; return its URL."""
        engine = sa.create_engine(
            self.admin_url.replace("postgresql://", "postgresql+psycopg://"),
            isolation_level="AUTOCOMMIT",
            poolclass=sa.pool.NullPool,
        )
        with engine.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def log(self) -> str:
        """Return the end of the server's log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except (FileNotFoundError, PermissionError):
            return ""

    def __enter__(self) -> PrivateCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def _let_postgres_through(directory: Path) -> None:
    """Let the postgres user traverse (not list) our folders above the cluster's folder.

    Temporary folders are made 0700; without this, initdb run as postgres cannot reach its own
    folder inside one.
    """
    for parent in directory.resolve().parents:
        if parent == Path("/"):
            break
        info = parent.stat()
        if info.st_uid == os.geteuid() and not info.st_mode & stat.S_IXOTH:
            parent.chmod(info.st_mode | stat.S_IXOTH)


def _wait_gone(pid: int, timeout: float) -> None:
    """Wait until a process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # A zombie of ours would never go; the postmaster is not our child, so this is enough.
        time.sleep(0.05)
