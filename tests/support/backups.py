"""Helpers for the backup and restore tests: a second machine, a filled server, archive surgery.

Fixture, for test modules to bind (``empty_database = backups.empty_database``):

* ``empty_database``: a second database of the same kind as ``database_url``, never migrated.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from server import db
from server.models import Base
from server.storage import services
from server.storage.models import Blob
from tests.support import databases, factories
from tests.support.openrosa import OPENROSA, jpeg, multipart, new_instance_id, publish_form, record

PHOTO, MEMBER_PHOTO = "1715090512345.jpg", "member.jpg"


@pytest.fixture
def empty_database(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A second database of the same kind, never migrated: the new machine's."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    admin = sa.engine.make_url(
        databases.pg_admin_url().replace("postgresql://", "postgresql+psycopg://")
    )
    name = f"merit_restore_{secrets.token_hex(4)}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name).render_as_string(hide_password=False)
    yield url.replace("postgresql+psycopg://", "postgresql://")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def fill(app: Flask, client, db_session, *, photos: int = 0) -> dict:
    """Give the server what a survey round leaves: records, photos, edits, a conflict.

    ``photos`` shifts the photos' content, so that two servers filled alike hold other blobs.
    """
    project = factories.project(db_session)
    factories.user(db_session, "coord@example.org", role="manager", project_id=project.id)
    app_user, token = factories.app_user(db_session, project.id)
    publish_form(db_session, project.id, app_user_ids=(app_user.actor_id,))
    base = f"/v1/key/{token}/projects/{project.id}"

    def post(xml, files=None, **kwargs):
        answer = client.post(
            f"{base}/submission",
            data=multipart(xml, files, **kwargs),
            headers=OPENROSA,
            content_type="multipart/form-data",
        )
        return answer.status_code

    statuses = []
    for n in range(6):
        statuses.append(
            post(record(new_instance_id()), {PHOTO: jpeg(photos + n), "audit.csv": b"e,n\n"})
        )
    # A record split over two posts, its photos arriving separately.
    split = new_instance_id()
    xml = record(split, members=(("Moussa", MEMBER_PHOTO),), audit=None)
    statuses.append(post(xml, {PHOTO: jpeg(photos + 100)}, incomplete=True))
    statuses.append(post(xml, {MEMBER_PHOTO: jpeg(photos + 101)}))
    # An edit: a second version carrying the photo forward.
    edited = new_instance_id()
    statuses.append(post(record(edited), {PHOTO: jpeg(photos + 200), "audit.csv": b"e,n\n"}))
    statuses.append(post(record(new_instance_id(), name="Awa T.", deprecated_id=edited)))
    # A conflict kept for review.
    statuses.append(post(record(edited, name="Autre"), {PHOTO: jpeg(photos + 200)}))
    assert statuses == [201] * 10 + [409]
    return {"token": token, "project_id": project.id, "app_user_id": app_user.actor_id}


def fill_app(app: Flask, *, photos: int = 0) -> dict:
    """:func:`fill` a server the test built itself (not the ``app`` fixture)."""
    with app.app_context(), db.database().session(readonly=True) as db_session:
        return fill(app, app.test_client(), db_session, photos=photos)


def rows_of(url: str) -> dict[str, list[tuple]]:
    """Every row of every table, in primary key order, as Python values."""
    engine = db.create_engine(url, poolclass=sa.pool.NullPool)
    found = {}
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            order = list(table.primary_key.columns)
            found[table.name] = [
                tuple(r) for r in connection.execute(sa.select(table).order_by(*order))
            ]
    engine.dispose()
    return found


def invoke(app: Flask, command, *args: str):
    """Run a command against ``app`` (its context pushed over any a fixture holds open)."""
    with app.app_context():
        return app.test_cli_runner().invoke(command, list(args))


def blob_bytes(app: Flask) -> dict[str, str]:
    """SHA-256 of what the store gives back for every catalogued blob."""
    with app.app_context(), db.database().session(readonly=True) as db_session:
        return {
            blob.sha256: hashlib.sha256(services.read_all(blob)).hexdigest()
            for blob in db_session.scalars(sa.select(Blob))
        }


def rewrite(
    archive: Path,
    out: Path,
    change: Callable[[str, bytes], bytes | None],
    *,
    fix_manifest: bool = False,
) -> Path:
    """Copy an archive, each member's bytes passed through ``change`` (None drops the member).

    ``fix_manifest``: write the new SHA-256 of every changed member into the manifest, as
    someone would who wanted the archive to pass its own checks.
    """
    changed: dict[str, str] = {}
    with tarfile.open(archive) as source, tarfile.open(out, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name == "manifest.json" and fix_manifest:
                manifest = json.loads(data)
                manifest["files"].update(changed)
                data = json.dumps(manifest).encode()
            else:
                new = change(member.name, data)
                if new is None:
                    continue
                if new != data:
                    changed[member.name] = hashlib.sha256(new).hexdigest()
                data = new
            member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    return out
