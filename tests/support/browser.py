"""A real browser for the console's tests: Debian's Chromium driven by Playwright.

Playwright's own browser downloads are never used (``playwright install`` needs the network):
the tests drive the ``chromium`` package of the system, headless. ``.ci/run`` installs it when
missing. Without it the browser tests skip and say why, except under ``CI=true``, where they
fail: CI must prove the console in a browser.

The console runs as a real server process (``merit serve``) on the test database, as in
production; ``merit serve`` creates the administrator from ``MERIT_ADMIN_EMAIL`` and
``MERIT_ADMIN_PASSWORD`` and the default project on first start.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.servers import ROOT, ServerProcess, server_env

CHROMIUM = os.environ.get("MERIT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "console"
ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "admin password for the browser tests"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def missing() -> str | None:
    """Return why the browser tests cannot run here, or None when they can."""
    if not Path(CHROMIUM).is_file():
        return (
            f"Chromium is not installed at {CHROMIUM} (apt-get install chromium, or set "
            "MERIT_TEST_CHROMIUM); the console's browser tests need it"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"the playwright package is missing ({exc}): pip install -e '.[test]'"
    return None


def launch(playwright):  # type: ignore[no-untyped-def]
    """Start Chromium headless; Playwright gives it a fresh, temporary user data directory."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def console_env(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Return the environment of a console server on the test database."""
    env = server_env(
        database_url, tmp_path, ADMIN_PASSWORD=ADMIN_PASSWORD, THREADS="8", LOG_JSON="false"
    )
    env.update(extra)
    return env


@contextmanager
def console_server(database_url: str, tmp_path: Path, **extra: str) -> Iterator[ServerProcess]:
    """Run ``merit serve`` on the test database for one test."""
    server = ServerProcess(
        console_env(database_url, tmp_path, **extra), log_path=tmp_path / "server.log"
    )
    with server:
        yield server


def screenshot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    """Save a full-page screenshot under test-artifacts/console/ (git-ignored); return it."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^\w.-]+", "-", name)
    path = ARTIFACTS / f"{safe}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page, base_url: str, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD):  # type: ignore[no-untyped-def]
    """Open the console's first page and sign in."""
    page.goto(base_url + "/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def png(width: int = 48, height: int = 32) -> bytes:
    """Return a real (tiny) PNG image, so that the browser can draw the record's photo."""
    rows = b"".join(b"\x00" + bytes((40, 120, 160)) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
