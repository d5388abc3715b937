"""Every file and folder the server makes is private, whatever the umask (issue 16).

``server/files.py`` is the one place that creates them; the last test reads the whole server
package and fails on any other call that could create a file or folder, so that a new one
cannot forget the mode.
"""

from __future__ import annotations

import ast
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from server import files

SERVER = Path(__file__).resolve().parents[2] / "server"


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o777], ids=lambda m: f"umask{m:03o}")
def test_what_the_helpers_create_is_private_whatever_the_umask(tmp_path, mask):
    with umask(mask):
        folder = files.private_dir(tmp_path / "a" / "b" / "c")
        with files.open_private(folder / "x.bin", "xb") as handle:
            handle.write(b"x")
        files.write_private(folder / "y.txt", b"y")
        handle, temp = files.private_temp(tmp_path / "staging", "stage-")
        handle.close()
        files.ensure_private(folder / "db.sqlite")
        with files.scratch_dir(tmp_path / "new-parent", ".scratch-") as scratch:
            assert mode(scratch) == 0o700
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", folder)] == [0o700] * 3
    assert mode(tmp_path / "new-parent") == 0o700
    for path in (folder / "x.bin", folder / "y.txt", temp, folder / "db.sqlite"):
        assert mode(path) == 0o600, path
    assert (folder / "y.txt").read_bytes() == b"y"
    assert not [p for p in folder.iterdir() if p.name.startswith(".y.txt.")]  # no temp left


def test_a_file_written_again_is_tightened_and_links_are_not_followed(tmp_path):
    lock = tmp_path / "lock"
    lock.write_bytes(b"")
    lock.chmod(0o644)
    files.open_private(lock, "ab").close()
    assert mode(lock) == 0o600
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        files.open_private(tmp_path / "link", "wb")
    assert not (tmp_path / "elsewhere").exists()


def test_tighten_takes_group_and_other_bits_off_everything_under_a_place(tmp_path):
    place = tmp_path / "var"
    (place / "blobs" / "ab").mkdir(parents=True)
    blob = place / "blobs" / "ab" / "photo"
    blob.write_bytes(b"a face")
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o755)
    (place / "link").symlink_to(outside)
    for path in (place, place / "blobs", place / "blobs" / "ab", blob):
        path.chmod(0o755 if path.is_dir() else 0o644)

    changed = files.tighten(place)

    assert {(p, old, new) for p, old, new in changed} == {
        (place, 0o755, 0o700),
        (place / "blobs", 0o755, 0o700),
        (place / "blobs" / "ab", 0o755, 0o700),
        (blob, 0o644, 0o600),
    }
    assert files.loose(place) == []
    assert mode(outside) == 0o755  # a link is not followed
    assert files.tighten(place) == []


def test_a_shared_sticky_folder_is_never_tightened(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    assert files.tighten(shared) == []
    assert mode(shared) == 0o1777
    assert [p for p, _status in files.loose(shared)] == [shared]  # the doctor still says it


def test_the_private_places_follow_the_settings(tmp_path):
    config = {
        "DATA_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db' / 'merit.db'}",
        "STORAGE_URL": "s3://bucket/prefix",
        "SPOOL_DIR": str(tmp_path / "spool"),
        "BACKUP_DIR": str(tmp_path / "backups"),
    }
    places = files.private_places(config)
    assert places["database"][0] == tmp_path / "db" / "merit.db"
    assert tmp_path / "db" / "merit.db-wal" in places["database"]
    assert "attachments" not in places  # in the bucket, not on this machine
    assert places["backups"] == [tmp_path / "backups"]
    config.update(
        DATABASE_URL="postgresql://db/merit", STORAGE_URL=str(tmp_path / "b"), BACKUP_DIR=""
    )
    places = files.private_places(config)
    assert "database" not in places and "backups" not in places
    assert places["attachments"] == [tmp_path / "b"]


# ---- the choke point ----------------------------------------------------------------------------

# Calls that create a file or folder, by the name called (and, for some, the module).
CREATING = {
    "mkdir",
    "makedirs",
    "mkstemp",
    "mkdtemp",
    "NamedTemporaryFile",
    "TemporaryDirectory",
    "write_bytes",
    "write_text",
    "symlink_to",
    "hardlink_to",
}
CREATING_IN = {
    "os": {"link", "symlink", "mkfifo"},
    "shutil": {"copy", "copyfile", "copy2", "copytree", "move"},
    "sqlite3": {"connect"},
}
# Where a file is made outside server/files.py, and why that is right.
ALLOWED = {
    ("server/forms/folder.py", "mkdir"): "compiled forms in the checkout, read by others",
    ("server/forms/folder.py", "write_bytes"): "compiled forms in the checkout",
    ("server/forms/compiler.py", "TemporaryDirectory"): "the form given to ODK Validate (0700)",
    ("server/forms/compiler.py", "write_text"): "inside that 0700 folder, a form, no answers",
    ("server/exports/cli.py", "open"): "the operator's chosen output (a file, a pipe, a device)",
    ("server/storage/local.py", "link"): "the staged file (0600) becomes the stored one",
    ("server/storage/spool.py", "link"): "a staged or copied file (0600) linked into the spool",
    ("server/config.py", "link"): "the private temporary key linked into place",
    ("server/ops/restore.py", "link"): "the old secret key kept beside it (0600)",
    ("server/exports/streams.py", "ZipFile"): "a zip streamed from memory to the client",
    ("server/exports/streams.py", "open"): "an entry of that zip",
}


def _writes(call: ast.Call) -> bool:
    """Tell whether an open() call opens a named file for writing (a mode with w, x or a).

    One given an open file (``fileobj=``) creates nothing.
    """
    if any(k.arg == "fileobj" for k in call.keywords):
        return False
    modes = [*call.args[1:2], *(k.value for k in call.keywords if k.arg == "mode")]
    return any(
        isinstance(m, ast.Constant) and isinstance(m.value, str) and set(m.value) & set("wxa")
        for m in modes
    )


def _os_open_creates(call: ast.Call) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "O_CREAT" for n in ast.walk(call))


def creating_calls() -> Iterator[tuple[str, int, str]]:
    for path in sorted(SERVER.rglob("*.py")):
        relative = str(path.relative_to(SERVER.parent))
        if relative == "server/files.py" or "/migrations/versions/" in relative:
            continue
        for node in ast.walk(ast.parse(path.read_text(), relative)):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            if name in CREATING or name in CREATING_IN.get(owner, ()):
                yield relative, node.lineno, name
            elif name == "open" and owner == "os":
                if _os_open_creates(node):
                    yield relative, node.lineno, name
            elif name in ("open", "GzipFile", "TarFile", "ZipFile") and _writes(node):
                yield relative, node.lineno, name


def test_files_are_created_only_through_server_files():
    stray = [
        f"{path}:{line} {name}()"
        for path, line, name in creating_calls()
        if (path, name) not in ALLOWED
    ]
    assert stray == [], "create files and folders through server/files.py: " + ", ".join(stray)


def test_the_choke_point_test_sees_a_file_written_the_usual_way():
    source = "from pathlib import Path\nPath('x').write_text('y')\nopen('z', 'w')\n"
    calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)]
    names = {getattr(c.func, "attr", getattr(c.func, "id", "")) for c in calls}
    assert "write_text" in names & CREATING
    assert any(_writes(c) for c in calls if getattr(c.func, "id", "") == "open")
