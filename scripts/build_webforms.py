"""Build ODK Web Forms into the static files the server serves (server/web/static/webforms/).

    python scripts/build_webforms.py           install from webforms/package-lock.json, build
    python scripts/build_webforms.py --check   build into a temporary folder and compare with
                                               the committed files (exit 1 when they differ)

The browser form pages (:mod:`server.web.pages.webforms`) load these files from the server
itself: nothing comes from a CDN or is fetched at run time, and ``make run`` needs no Node.js.
Node.js (20.19 or newer) and npm are needed only here, to rebuild after changing
``webforms/`` (its entry ``src/main.js``, or the versions pinned in ``package-lock.json``):
``npm ci`` installs exactly the lock file's packages, without running their install scripts,
and Vite bundles them. The build is deterministic: the same lock file gives the same bytes
(tests/integration/test_webforms_build.py rebuilds and compares).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "webforms"
OUTPUT = ROOT / "server" / "web" / "static" / "webforms"
MIN_NODE = (20, 19)


def node_problem() -> str | None:
    """Return why this machine cannot build (no Node.js, or too old), or None."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "Node.js and npm are needed to build ODK Web Forms"
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    parts = tuple(int(p) for p in version.lstrip("v").split(".")[:2])
    if parts < MIN_NODE:
        return f"Node.js {version} is too old: ODK Web Forms needs 20.19 or newer"
    return None


def install() -> None:
    """Install exactly the packages of the lock file (no install scripts)."""
    subprocess.run(
        ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=PROJECT,
        check=True,
    )


def build(out_dir: Path) -> None:
    """Bundle webforms/src/main.js and its dependencies into ``out_dir``."""
    env = {**os.environ, "WEBFORMS_OUT_DIR": str(out_dir)}
    subprocess.run(
        [str(PROJECT / "node_modules" / ".bin" / "vite"), "build"],
        cwd=PROJECT,
        env=env,
        check=True,
    )


def differences(built: Path, committed: Path) -> list[str]:
    """Return the names of files that differ, or exist on one side only."""
    names = {p.name for p in built.iterdir()} | {p.name for p in committed.iterdir()}
    return sorted(
        name
        for name in names
        if not (built / name).is_file()
        or not (committed / name).is_file()
        or not filecmp.cmp(built / name, committed / name, shallow=False)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare a fresh build")
    parser.add_argument("--no-install", action="store_true", help="use webforms/node_modules")
    args = parser.parse_args(argv)
    problem = node_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if not args.no_install:
        install()
    if not args.check:
        build(OUTPUT)
        print(f"built {OUTPUT.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "webforms"
        build(out)
        changed = differences(out, OUTPUT)
    if changed:
        print("differs from the committed build: " + ", ".join(changed), file=sys.stderr)
        print("run: python scripts/build_webforms.py, and commit the files", file=sys.stderr)
        return 1
    print("the committed build matches the lock file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
