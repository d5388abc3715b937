"""Real server processes for tests: gunicorn serving the app over HTTP on a free port."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
MERIT = Path(sys.executable).with_name("merit")


ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "un mot de passe de test assez long"
SECRET_KEY = "test-secret-key-not-for-production"


def server_env(database_url: str, tmp_path: Path, **settings: object) -> dict[str, str]:
    """Return the environment of a test server: its files under ``tmp_path``, no forms
    published, no ODK Validate, the administrator ``ADMIN_EMAIL``; ``settings`` (named without
    ``MERIT_``: ``WORKERS=2``) change or add to it, and ``None`` leaves a setting to the
    server's own default (``ADMIN_PASSWORD=None``: one generated).
    """
    env = {
        "MERIT_DATA_DIR": str(tmp_path / "var"),
        "MERIT_DATABASE_URL": database_url,
        "MERIT_STORAGE_URL": str(tmp_path / "blobs"),
        "MERIT_SECRET_KEY": SECRET_KEY,
        "MERIT_ADMIN_EMAIL": ADMIN_EMAIL,
        "MERIT_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MERIT_FORMS_DIR": str(tmp_path / "no-forms"),
        "MERIT_ODK_VALIDATE": "false",
        "MERIT_WORKERS": "1",
        "MERIT_THREADS": "4",
    }
    for name, value in settings.items():
        if value is None:
            env.pop(f"MERIT_{name}", None)
        else:
            env[f"MERIT_{name}"] = str(value)
    return env


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


_RUNNING: set[ServerProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Stop servers a failed test left running, when the test process ends."""
    for server in list(_RUNNING):
        server.stop(signal.SIGKILL, timeout=5)


class ServerProcess:
    """``merit serve`` (or any command) in a subprocess, stopped with SIGTERM."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        args: tuple[str, ...] = (),
        command: list[str] | None = None,
        log_path: Path | None = None,
        umask: int | None = None,
    ) -> None:
        self.port = int(env.get("MERIT_PORT") or free_port())
        # The file-mode creation mask the process starts with (None: this process's own).
        self.umask = -1 if umask is None else umask
        self.env = {**os.environ, **env, "MERIT_PORT": str(self.port)}
        self.command = command or [str(MERIT), "serve", *args]
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ServerProcess:
        """Start the process and wait until /healthz answers."""
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=self.umask,
        )
        _RUNNING.add(self)
        try:
            self._wait_until_healthy(timeout)
        except BaseException:
            self.stop()  # never leave a server behind when it failed to come up
            raise
        return self

    def _wait_until_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):  # workers still booting
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer within {timeout}s: {self.log()}")

    def log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Stop the whole process group; return the exit code."""
        _RUNNING.discard(self)
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        os.killpg(self.process.pid, sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
