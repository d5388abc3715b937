"""``merit storage``: check, migrate, verify, spool, drain."""

from __future__ import annotations

import hashlib
import io

from flask import Flask

from server import db
from server.cli import main
from server.storage import services
from server.storage.cli import storage
from server.storage.local import LocalStore
from tests.conftest import make_app
from tests.support import s3
from tests.support.servers import free_port

s3_server = s3.s3_server
s3_bucket = s3.s3_bucket


def photo(seed: int | str, size: int = 50_000) -> bytes:
    return hashlib.shake_256(f"photo-{seed}".encode()).digest(size)


def save_photos(app: Flask, count: int, start: int = 0) -> list[str]:
    names = []
    with app.app_context(), db.database().session() as db_session:
        for n in range(start, start + count):
            blob = services.save_stream(db_session, io.BytesIO(photo(n)))
            names.append(blob.sha256)
        db_session.commit()
    return names


def run(app: Flask, *args: str):
    return app.test_cli_runner().invoke(storage, list(args))


def test_the_storage_commands_are_part_of_merit():
    assert main.commands["storage"] is storage


def test_check_reports_a_working_store_and_spool(app):
    result = run(app, "check")
    assert result.exit_code == 0, result.output
    assert "list, write, read, delete: ok" in result.output
    assert "write: ok" in result.output


def test_check_fails_when_the_store_cannot_be_written(database_url, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    app = make_app(database_url, tmp_path, STORAGE_URL=str(blocker / "blobs"))
    result = run(app, "check")
    assert result.exit_code == 1
    assert "FAILED" in result.output


def test_check_reaches_the_bucket(database_url, tmp_path, s3_bucket):
    app = make_app(database_url, tmp_path, STORAGE_URL=f"s3://{s3_bucket}/attachments")
    result = run(app, "check")
    assert result.exit_code == 0, result.output
    assert f"s3://{s3_bucket}/attachments at http://127.0.0.1" in result.output
    assert "merit-test-secret" not in result.output


def test_verify_passes_when_every_blob_is_intact(app):
    save_photos(app, 3)
    result = run(app, "verify")
    assert result.exit_code == 0, result.output
    assert "3 blobs checked, 0 problems" in result.output


def test_verify_names_missing_and_damaged_blobs(app):
    missing, damaged, _intact = save_photos(app, 3)
    store = LocalStore(app.config["STORAGE_URL"])
    store.delete(missing)
    store.path(damaged).write_bytes(b"x" * 50_000)  # same size, other bytes
    result = run(app, "verify")
    assert result.exit_code == 1
    assert f"missing: {missing}" in result.output
    assert f"checksum: {damaged}" in result.output
    assert "3 blobs checked, 2 problems" in result.output
    quick = run(app, "verify", "--quick")
    assert quick.exit_code == 1
    assert f"missing: {missing}" in quick.output
    assert damaged not in quick.output  # same size: only a full verify sees it


def test_migrate_copies_every_blob_to_s3_and_can_be_run_again(
    database_url, tmp_path, s3_bucket, s3_server
):
    local = make_app(database_url, tmp_path, STORAGE_URL=str(tmp_path / "blobs"))
    names = save_photos(local, 4)
    target = f"s3://{s3_bucket}/attachments"

    result = run(local, "migrate", "--to", target)
    assert result.exit_code == 0, result.output
    assert "4 copied, 0 already there, 0 failed" in result.output
    assert f"MERIT_STORAGE_URL={target}" in result.output

    names += save_photos(local, 1, start=10)  # a record arrives before the switch
    again = run(local, "migrate", "--to", target)
    assert again.exit_code == 0, again.output
    assert "1 copied, 4 already there, 0 failed" in again.output

    stored = s3_server.objects(s3_bucket, "attachments/")
    assert {key.rpartition("/")[2] for key in stored} == set(names)
    for key, data in stored.items():
        assert hashlib.sha256(data).hexdigest() == key.rpartition("/")[2]
    on_s3 = make_app(database_url, tmp_path, STORAGE_URL=target)
    assert run(on_s3, "verify").exit_code == 0


def test_migrate_refuses_to_copy_a_damaged_blob(database_url, tmp_path):
    app = make_app(database_url, tmp_path, STORAGE_URL=str(tmp_path / "blobs"))
    (damaged,) = save_photos(app, 1)
    LocalStore(tmp_path / "blobs").path(damaged).write_bytes(b"y" * 50_000)
    result = run(app, "migrate", "--to", str(tmp_path / "elsewhere"))
    assert result.exit_code == 1
    assert f"FAILED {damaged}: the current copy is damaged" in result.output
    assert not LocalStore(tmp_path / "elsewhere").exists(damaged)


def test_spool_reports_what_waits_and_drain_moves_it(database_url, tmp_path, monkeypatch):
    down = s3.S3Server(tmp_path / "s3", port=free_port())
    for key, value in down.env.items():
        monkeypatch.setenv(key, value)
    app = make_app(database_url, tmp_path, STORAGE_URL="s3://merit-down/attachments")
    with app.app_context():
        # Left by workers that stopped before draining them (no drainer runs in this process).
        for n in range(2):
            staged = services.stage_stream(io.BytesIO(photo(n)))
            services.spool().add(staged)
            staged.discard()
    report = run(app, "spool")
    assert report.exit_code == 0
    assert "files:  2" in report.output
    assert "100.0 KB of 2.0 GB" in report.output
    assert "oldest: " in report.output and "(empty)" not in report.output

    stuck = run(app, "drain")
    assert stuck.exit_code == 1
    assert "2 blobs still waiting" in stuck.output

    with s3.S3Server(tmp_path / "s3", port=down.port) as server:  # the store comes back
        server.create_bucket("merit-down")
        drained = run(app, "drain")
        assert drained.exit_code == 0, drained.output
        assert "moved 2 blobs (100.0 KB)" in drained.output
        assert "0 blobs still waiting" in drained.output
        assert len(server.objects("merit-down")) == 2
    assert "files:  0" in run(app, "spool").output
