"""A restore from a damaged backup leaves the server as it was, and says why.

``merit restore`` checks the whole archive, stages everything it will put back (the database
in one transaction, the attachments and the secret key in a private folder of the target),
and switches only at the end. A backup damaged past its database part (a photo changed or
missing, the secret key changed), rows the database refuses, a store that refuses a file:
each leaves the old database, attachments and secret key exactly as they were, and the
operator reads what is wrong (no traceback, exit status 1).

The target is a second machine that already serves other records (``restore --force``), on
SQLite and on PostgreSQL; the archive comes from the first.
"""

from __future__ import annotations

import gzip
import hashlib
import secrets
import stat
import tarfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from server import db, migrate
from server.auth.roles import sync_roles
from server.ops.cli import backup, restore
from tests.conftest import make_app
from tests.support import backups
from tests.support.backups import fill, fill_app, invoke, rows_of

empty_database = backups.empty_database

OLD_KEY = "the key the second machine was using until now"


def state(app: Flask) -> dict:
    """What a restore may change: every row, every file of the store, the secret key."""
    store = Path(app.config["STORAGE_URL"])
    key = Path(app.config["DATA_DIR"]) / "secret_key"
    return {
        "rows": rows_of(app.config["DATABASE_URL"]),
        "store": {
            str(path.relative_to(store)): (
                "folder" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            )
            for path in sorted(store.rglob("*"))
        },
        "key": key.read_bytes() if key.exists() else None,
    }


@pytest.fixture
def archive(app, client, db_session, tmp_path) -> Path:
    """A backup of the first machine."""
    fill(app, client, db_session)
    path = tmp_path / "backup.tar"
    result = app.test_cli_runner().invoke(backup, [str(path)])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def second(empty_database, tmp_path):
    """The second machine: its own database, store and key, serving its own records."""
    migrate.upgrade(empty_database)
    target = make_app(empty_database, tmp_path / "second")
    with target.app_context(), db.database().session() as db_session:
        sync_roles(db_session)
        db_session.commit()
    fill_app(target, photos=1000)
    key = Path(target.config["DATA_DIR"]) / "secret_key"
    key.write_text(OLD_KEY)
    key.chmod(0o600)
    yield target
    target.extensions["merit.db"].dispose()


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _last_blob(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        return [n for n in tar.getnames() if n.startswith("blobs/")][-1]


def _duplicate_a_row(data: bytes) -> bytes:
    lines = gzip.decompress(data).decode().splitlines()
    return gzip.compress(("\n".join([*lines, lines[-1]]) + "\n").encode())


DAMAGES = {
    # name: (how the archive is changed, whether the manifest is made to agree, what is said)
    "a photo changed": (
        lambda last: lambda name, data: _flip_last_byte(data) if name == last else data,
        False,
        "is damaged",
    ),
    "a photo missing": (
        lambda last: lambda name, data: None if name == last else data,
        False,
        "is missing from the archive",
    ),
    "the secret key changed": (
        lambda last: lambda name, data: b"x" + data if name == "secret_key" else data,
        False,
        "secret_key is damaged",
    ),
    "a row twice, the manifest agreeing": (
        lambda last: (
            lambda name, data: (
                _duplicate_a_row(data) if name == "database/submissions.jsonl.gz" else data
            )
        ),
        True,
        "the database refused",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_restore_that_fails_leaves_everything_as_it_was(archive, second, tmp_path, damage):
    change, agree, said = DAMAGES[damage]
    damaged = backups.rewrite(
        archive, tmp_path / "damaged.tar", change(_last_blob(archive)), fix_manifest=agree
    )
    before = state(second)

    result = invoke(second, restore, str(damaged), "--force")

    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert said in result.output
    assert "nothing was changed" in result.output
    assert state(second) == before
    leftovers = [p.name for p in Path(second.config["DATA_DIR"]).iterdir()]
    assert not [name for name in leftovers if "restore" in name], leftovers


def test_a_store_that_refuses_a_file_leaves_everything_as_it_was(archive, second):
    # The last photo's folder cannot be made (a file holds its name): the store refuses it
    # once the others were put.
    sha256 = _last_blob(archive).rsplit("/", 1)[1]
    store = Path(second.config["STORAGE_URL"])
    blocker = store / sha256[:2]
    if blocker.exists():
        pytest.skip("the second machine already has a folder of that name")  # 1 in 256
    blocker.write_bytes(b"")
    before = state(second)

    result = invoke(second, restore, str(archive), "--force")

    assert result.exit_code == 1, result.output
    assert sha256 in result.output
    assert "nothing was changed" in result.output
    assert state(second) == before


def test_a_restore_into_an_empty_database_that_fails_leaves_it_empty(
    archive, empty_database, tmp_path
):
    target = make_app(empty_database, tmp_path / "new")
    damaged = backups.rewrite(
        archive,
        tmp_path / "damaged.tar",
        lambda name, data: _flip_last_byte(data) if name == _last_blob(archive) else data,
    )
    result = invoke(target, restore, str(damaged))
    assert result.exit_code == 1, result.output
    assert "nothing was changed" in result.output
    store = Path(target.config["STORAGE_URL"])
    assert not [p for p in store.rglob("*") if p.is_file()]
    engine = sa.create_engine(empty_database.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        assert not sa.inspect(connection).has_table("submissions")
    engine.dispose()
    # The operator fixes the archive and runs the same command again: it works.
    result = invoke(target, restore, str(archive))
    assert result.exit_code == 0, result.output
    target.extensions["merit.db"].dispose()


def test_what_a_restore_writes_is_private(archive, empty_database, tmp_path):
    target = make_app(empty_database, tmp_path / "new")
    result = invoke(target, restore, str(archive))
    assert result.exit_code == 0, result.output
    places = [Path(target.config["DATA_DIR"]), Path(target.config["STORAGE_URL"])]
    database = sa.engine.make_url(empty_database).database
    if empty_database.startswith("sqlite"):
        places.append(Path(database))
    loose = []
    for place in places:
        for path in [place, *place.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode != (0o700 if path.is_dir() else 0o600):
                loose.append(f"{path} {mode:04o}")
    assert loose == []
    target.extensions["merit.db"].dispose()


def test_an_unreachable_database_is_said_plainly(archive, tmp_path):
    url = f"postgresql://postgres@127.0.0.1:5432/merit_absent_{secrets.token_hex(4)}"
    target = make_app(url, tmp_path / "new")
    result = invoke(target, restore, str(archive))
    assert result.exit_code == 1, result.output
    assert "restore failed" in result.output
    assert "database" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    target.extensions["merit.db"].dispose()


def test_the_manifest_must_be_json(archive, tmp_path, app):
    damaged = backups.rewrite(
        archive,
        tmp_path / "damaged.tar",
        lambda name, data: data[:-10] if name == "manifest.json" else data,
    )
    result = app.test_cli_runner().invoke(restore, [str(damaged), "--force"])
    assert result.exit_code == 1, result.output
    assert "manifest.json" in result.output
