#!/bin/sh
# Install merit-collect into a virtual environment, with the pinned versions of
# docker/constraints.txt. The Makefile (`make run`, `make test`, so CI) and the Docker image
# both install through this script, so the image is built the way CI checks.
#
#   scripts/install.sh [--venv DIR] [--editable] [--test]
#       create DIR (default .venv) with $PYTHON (default python3) if it does not exist, then
#       install the server (--editable: from this checkout, for development; --test: with the
#       test dependencies)
#   scripts/install.sh --lock [--venv DIR]
#       rewrite docker/constraints.txt from what DIR has installed (after changing
#       dependencies in setup.cfg: install, run the tests, lock, commit the three together)
set -eu

ROOT=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
CONSTRAINTS="$ROOT/docker/constraints.txt"
PYTHON=${PYTHON:-python3}
VENV=.venv
EDITABLE=""
EXTRA=""
LOCK=""

while [ $# -gt 0 ]; do
    case "$1" in
        --venv) VENV=$2; shift 2 ;;
        --editable) EDITABLE="-e"; shift ;;
        --test) EXTRA="[test]"; shift ;;
        --lock) LOCK=1; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac

if [ -n "$LOCK" ]; then
    {
        echo "# Pinned versions of every dependency of merit-collect (and of its tests), used by"
        echo "# scripts/install.sh for development, CI and the Docker image alike."
        echo "# Regenerate with: scripts/install.sh --lock   (from a venv that passes the tests)"
        # setuptools and wheel only build the package; pip's own build isolation picks them.
        "$VENV/bin/python" -m pip freeze --all --exclude-editable \
            | grep -v -i -E '^(setuptools|wheel|merit-collect)==' | LC_ALL=C sort -f
    } > "$CONSTRAINTS.new"
    mv "$CONSTRAINTS.new" "$CONSTRAINTS"
    echo "wrote $CONSTRAINTS"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "Python 3.11 or newer is needed ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
        exit 1
    }
    "$PYTHON" -m venv "$VENV"
fi
# Even with --quiet, pip passes on what the build backend prints: setuptools says
# "BuildBackendWarning: Editable installation" (10 lines, informational) on every editable
# install. pip's output is kept in a log: printed whole when pip fails, and otherwise only
# pip's own warnings and errors (lines starting WARNING or ERROR), so `make run` reaches its
# banner without a screen of notices and a real problem is still shown.
pip_install() {
    log=$(mktemp "${TMPDIR:-/tmp}/merit-install.XXXXXX")
    if "$VENV/bin/python" -m pip install --quiet --constraint "$CONSTRAINTS" "$@" >"$log" 2>&1
    then
        grep -E '^(WARNING|ERROR)' "$log" >&2 || true
        rm -f "$log"
    else
        status=$?
        cat "$log" >&2
        rm -f "$log"
        echo "install.sh: pip install $* failed (exit $status)" >&2
        exit "$status"
    fi
}

pip_install --upgrade pip
cd "$ROOT"
# shellcheck disable=SC2086 # EDITABLE is one flag or nothing
pip_install $EDITABLE ".$EXTRA"
