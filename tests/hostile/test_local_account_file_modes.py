"""Another account on the server's machine reads nothing the server keeps.

The database holds every account's Digest HA1 (a password equivalent: a copied HA1 answers
Digest challenges as its account, an administrator's included) and the sealed app-user
tokens; the secret key signs sessions and seals those tokens; attachments are photos of
faces; a backup holds all of it. Whatever umask the server starts with (a shell's usual 022,
or 000 from a careless unit file), the data folder is 0700 and every file in it 0600 (folders
0700), and so are the spool, the backups and everything ``merit backup`` writes. An install
made before this rule is tightened at the next start.

Each run is a real ``merit serve`` (gunicorn) started with the umask under test, on SQLite
(its database file in the data folder, as by default) and on PostgreSQL.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import databases
from tests.support.servers import MERIT, ServerProcess
from tests.support.site import PHOTO_NAME, household_record, start_site

pytestmark = pytest.mark.slow

UMASKS = (0o022, 0o000)


def loose(root: Path) -> list[str]:
    """Every entry under ``root`` (itself included) that another account could read or enter."""
    found = []
    for path in [root, *sorted(root.rglob("*"))]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        wanted = 0o700 if stat.S_ISDIR(mode) else 0o600
        if stat.S_IMODE(mode) != wanted:
            found.append(f"{path} {stat.S_IMODE(mode):04o}")
    return found


@pytest.fixture(
    scope="module",
    params=[(kind, umask) for kind in ("sqlite", "postgresql") for umask in UMASKS],
    ids=lambda param: f"{param[0]}-umask{param[1]:03o}",
)
def served(request, tmp_path_factory) -> Iterator[tuple]:
    """A site served with the umask under test, its spool outside the data folder."""
    kind, umask = request.param
    root = tmp_path_factory.mktemp(f"modes-{kind}-{umask:03o}")
    if kind == "sqlite":
        url = f"sqlite:///{root / 'var' / 'merit.db'}"  # the default place
    else:
        url = request.getfixturevalue("pg_url")
        databases.reset(url)
    env = {"MERIT_SPOOL_DIR": str(root / "spool")}
    assert not os.environ.get("MERIT_SECRET_KEY"), "the server must generate its own key here"
    with start_site(url, root, env, umask=umask) as site:
        yield site, root, umask, kind


def test_the_data_folder_and_every_file_in_it_are_private(served):
    _site, root, _umask, kind = served
    data = root / "var"
    written = {p.name for p in data.rglob("*")}
    assert {"secret_key", "staging", "blobs"} <= written, written
    assert any(len(name) == 64 for name in written), "no attachment in the blob store"
    if kind == "sqlite":
        assert {"merit.db", "merit.db-wal", "merit.db-shm"} <= written, written
    assert loose(data) == []


def test_attachments_waiting_in_the_spool_are_private(served):
    site, root, _umask, _kind = served
    blobs = root / "var" / "blobs"
    away = root / "blobs-away"
    # The store becomes unwritable (its folder replaced by a file): the photo is spooled.
    blobs.rename(away)
    blobs.write_bytes(b"")
    try:
        photo = b"\xff\xd8\xff\xe0" + uuid.uuid4().bytes * 300 + b"\xff\xd9"
        sent = site.submit(household_record(), [(PHOTO_NAME, photo, "image/jpeg")])
        assert sent.status_code == 201, sent.text
        spooled = list((root / "spool" / "blobs").iterdir())
        assert spooled, "the photo did not wait in the spool"
        assert loose(root / "spool") == []
    finally:
        blobs.unlink()
        away.rename(blobs)


def test_a_backup_is_private_wherever_it_is_written(served):
    site, root, umask, _kind = served
    outside = root / "elsewhere"
    outside.mkdir()
    os.chmod(outside, 0o755)  # noqa: S103 - the operator's folder: the archive must not rely on it
    env = {**site.server.env}
    done = subprocess.run(
        [str(MERIT), "backup", str(outside)], env=env, capture_output=True, umask=umask, timeout=300
    )
    assert done.returncode == 0, done.stderr
    archives = list(outside.iterdir())
    assert len(archives) == 1 and archives[0].suffix == ".tar", archives
    assert stat.S_IMODE(archives[0].stat().st_mode) == 0o600
    with tarfile.open(archives[0]) as tar:
        assert "secret_key" in tar.getnames()  # what makes it worth stealing
        assert {m.mode for m in tar.getmembers()} == {0o600}

    # The folder the setting names is made private when `merit backup` creates it.
    backups = root / "backups"
    env["MERIT_BACKUP_DIR"] = str(backups)
    done = subprocess.run(
        [str(MERIT), "backup"], env=env, capture_output=True, umask=umask, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert len(list(backups.glob("merit-backup-*.tar"))) == 1
    assert loose(backups) == []


def test_an_install_made_before_the_rule_is_tightened_at_start(tmp_path):
    """Files an older version left readable are made private by the next start, and logged.

    SQLite only: it is the case where the database itself lies in the data folder.
    """
    data = tmp_path / "var"
    store = tmp_path / "store"  # MERIT_STORAGE_URL as a folder outside the data folder
    env = {
        "MERIT_DATA_DIR": str(data),
        "MERIT_STORAGE_URL": str(store),
        "MERIT_FORMS_DIR": str(Path(__file__).resolve().parents[2] / "forms"),
        "MERIT_WORKERS": "1",
        "MERIT_ODK_VALIDATE": "false",
        "MERIT_LOG_JSON": "false",
    }
    log = tmp_path / "server.log"
    with ServerProcess(env, log_path=log, umask=0o022):
        pass  # first start: database, generated key and password, published forms and media
    assert (data / "admin-password.txt").exists()
    assert any(len(p.name) == 64 for p in store.rglob("*"))
    for path in [data, store, *data.rglob("*"), *store.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    before = loose(data) + loose(store)
    assert before

    log.write_bytes(b"")
    with ServerProcess(env, log_path=log, umask=0o022):
        assert loose(data) == []
        assert loose(store) == []
    told = log.read_text()
    for name in ("merit.db", "secret_key", "admin-password.txt"):
        assert str(data / name) in told, told
