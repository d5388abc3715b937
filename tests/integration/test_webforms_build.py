"""The committed ODK Web Forms files are what the lock file builds.

``server/web/static/webforms/`` is committed so that ``make run`` needs nothing but Python;
this test rebuilds it from ``webforms/package-lock.json`` (``npm ci``, then Vite) into a
temporary folder and compares every byte, so the files served are the pinned packages and our
entry, nothing else. It needs Node.js 20.19+ and the npm registry: without Node it skips with
the reason, except under ``CI=true``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import IN_CI
from tests.support.servers import ROOT

SCRIPT = ROOT / "scripts" / "build_webforms.py"
OUTPUT = ROOT / "server" / "web" / "static" / "webforms"


def _node_problem() -> str | None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import build_webforms
    finally:
        sys.path.pop(0)
    return build_webforms.node_problem()


def test_the_committed_web_forms_build_is_what_the_lock_file_builds() -> None:
    problem = _node_problem()
    if problem:
        if IN_CI:
            pytest.fail(problem + " (CI=true: the Web Forms build must be checked)")
        pytest.skip(problem)
    committed = sorted(p.name for p in OUTPUT.iterdir())
    assert "webforms.js" in committed
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "matches" in result.stdout


def test_the_build_does_not_fetch_anything_at_run_time() -> None:
    """No CDN: the bundle names no outside address to load code, styles or fonts from."""
    for path in OUTPUT.iterdir():
        text = path.read_text("utf-8")
        for marker in ("cdn.jsdelivr", "unpkg.com", "fonts.googleapis", "fonts.gstatic"):
            assert marker not in text, (path.name, marker)
        assert "@import url(http" not in text, path.name
