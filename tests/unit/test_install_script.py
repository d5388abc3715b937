"""scripts/install.sh (what `make run` and `make test` install through) is quiet when pip
succeeds and shows everything when it fails (issue 19: `make run` printed about 200 lines of
setuptools warnings before its banner).

A stand-in ``python`` in a temporary venv prints what pip and setuptools print and exits
as told, so the script's handling is checked without installing anything; the real install
is what `make test` and CI run first.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/bin/sh
echo "  /tmp/pip-build-env/editable_wheel.py:354: BuildBackendWarning: Editable installation."
echo "  !!"
echo "          Please be careful with folders in your working directory with the same"
echo "WARNING: pip's own warning about $*"
if [ -n "${FAIL_ON:-}" ] && echo "$*" | grep -q -- "$FAIL_ON"; then
    echo "ERROR: Could not find a version that satisfies the requirement" >&2
    exit 3
fi
"""


def run_install(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return subprocess.run(
        [str(ROOT / "scripts" / "install.sh"), "--venv", str(tmp_path / "venv"), "--editable"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), **env},
        check=False,
    )


def test_a_successful_install_prints_only_pips_own_warnings(tmp_path):
    result = run_install(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines == [
        "WARNING: pip's own warning about -m pip install --quiet --constraint "
        f"{ROOT}/docker/constraints.txt --upgrade pip",
        "WARNING: pip's own warning about -m pip install --quiet --constraint "
        f"{ROOT}/docker/constraints.txt -e .",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["venv"]  # no log left behind


def test_a_failed_install_prints_everything_and_fails(tmp_path):
    result = run_install(tmp_path, FAIL_ON="-e")
    assert result.returncode == 3
    assert "BuildBackendWarning: Editable installation." in result.stderr
    assert "ERROR: Could not find a version" in result.stderr
    assert "install.sh: pip install -e . failed (exit 3)" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["venv"]
