"""``merit backup`` and ``merit restore``: a full round trip to a new machine.

A server receives records the way tablets send them (attachments, a split upload, an edit, a
conflict), then is backed up; a second, empty server (its own database and attachment store)
restores the archive. Every row of every table must come back identical, every attachment with
its SHA-256 (``merit storage verify``), and the restored server must go on working: new records
get new ids, the tablets' tokens still open the same project.
"""

from __future__ import annotations

import io
import json
import tarfile

import sqlalchemy as sa

from server import db
from server.auth import app_users
from server.auth.models import AppUser
from server.db import insert_or_ignore
from server.ops.cli import backup, restore
from server.storage import services
from server.storage.cli import storage
from server.storage.models import Blob
from server.submissions.models import Submission
from tests.conftest import make_app
from tests.support import backups, s3
from tests.support.backups import PHOTO, blob_bytes, fill, invoke, rows_of
from tests.support.openrosa import OPENROSA, jpeg, multipart, new_instance_id, record

s3_server = s3.s3_server
s3_bucket = s3.s3_bucket
empty_database = backups.empty_database


def test_a_backup_restores_every_row_and_attachment_on_a_new_machine(
    app, client, db_session, empty_database, tmp_path
):
    facts = fill(app, client, db_session)
    source_rows = rows_of(app.config["DATABASE_URL"])
    source_blobs = blob_bytes(app)
    assert len(source_blobs) >= 10

    result = app.test_cli_runner().invoke(backup, [str(tmp_path)])
    assert result.exit_code == 0, result.output
    archive = next(tmp_path.glob("merit-backup-*.tar"))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
        listed = tar.extractfile("attachments.tsv").read().decode().splitlines()[1:]
    assert names[-1] == "manifest.json"  # written last
    assert manifest["attachments"]["mode"] == "archive"
    assert {line.split("\t")[0] for line in listed} == set(source_blobs)
    assert {line.split("\t")[3] for line in listed} == {"archive"}
    assert manifest["database"]["tables"]["submissions"]["rows"] == 8
    assert manifest["database"]["tables"]["submission_versions"]["rows"] == 9

    # The new machine: another database, another data folder and store.
    new_home = tmp_path / "new-machine"
    target = make_app(
        empty_database,
        new_home,
        SECRET_KEY="a-key-generated-on-the-new-machine",
    )
    result = invoke(target, restore, str(archive))
    assert result.exit_code == 0, result.output
    assert "restored" in result.output

    assert rows_of(empty_database) == source_rows
    verify = invoke(target, storage, "verify")
    assert verify.exit_code == 0, verify.output
    assert f"{len(source_blobs)} blobs checked, 0 problems" in verify.output
    assert blob_bytes(target) == source_blobs
    # The key that seals app-user tokens came back: the tablets' QR codes can be shown again.
    key = (new_home / "var" / "secret_key").read_text()
    assert key == app.config["SECRET_KEY"]
    target.extensions["merit.db"].dispose()

    # The restored server goes on: a tablet sends a new record with its old token.
    restarted = make_app(empty_database, new_home, SECRET_KEY=key)
    with restarted.app_context(), db.database().session() as restored_session:
        app_user = restored_session.get(AppUser, facts["app_user_id"])
        assert app_users.token_of(app_user, secret_key=key) == facts["token"]
    answer = restarted.test_client().post(
        f"/v1/key/{facts['token']}/projects/{facts['project_id']}/submission",
        data=multipart(record(new_instance_id()), {PHOTO: jpeg(300), "audit.csv": b"e,n\n"}),
        headers=OPENROSA,
        content_type="multipart/form-data",
    )
    assert answer.status_code == 201, answer.data
    with restarted.app_context(), db.database().session(readonly=True) as restored_session:
        ids = list(restored_session.scalars(sa.select(Submission.id).order_by(Submission.id)))
        seqs = list(restored_session.scalars(sa.select(Submission.seq).order_by(Submission.id)))
    assert ids[-1] > max(r[0] for r in source_rows["submissions"])
    assert seqs[-1] > max(seqs[:-1])  # the paging order goes on after the restored records
    restarted.extensions["merit.db"].dispose()


def test_restore_refuses_a_database_with_data_unless_forced(app, client, db_session, tmp_path):
    fill(app, client, db_session)
    archive = tmp_path / "backup.tar"
    assert app.test_cli_runner().invoke(backup, [str(archive)]).exit_code == 0
    refused = app.test_cli_runner().invoke(restore, [str(archive)])
    assert refused.exit_code == 1
    assert "already holds data" in refused.output
    forced = app.test_cli_runner().invoke(restore, [str(archive), "--force"])
    assert forced.exit_code == 0, forced.output
    assert rows_of(app.config["DATABASE_URL"])["submissions"]


def test_an_archive_cut_short_or_damaged_is_refused(app, client, db_session, tmp_path):
    fill(app, client, db_session)
    archive = tmp_path / "backup.tar"
    assert app.test_cli_runner().invoke(backup, [str(archive)]).exit_code == 0
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    result = app.test_cli_runner().invoke(restore, [str(cut), "--force"])
    assert result.exit_code == 1
    assert "restore failed" in result.output

    damaged = tmp_path / "damaged.tar"
    with tarfile.open(archive) as source, tarfile.open(damaged, "w") as out:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name == "database/submissions.jsonl.gz":
                data = data[:-8] + b"\0" * 8
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    result = app.test_cli_runner().invoke(restore, [str(damaged), "--force"])
    assert result.exit_code == 1
    assert "database/submissions.jsonl.gz is damaged" in result.output


def test_with_s3_attachments_stay_in_the_bucket_except_those_still_in_the_spool(
    database_url, empty_database, tmp_path, s3_bucket, s3_server
):
    url = f"s3://{s3_bucket}/collect"
    source = make_app(database_url, tmp_path / "a", STORAGE_URL=url)
    with source.app_context(), db.database().session() as db_session:
        fill(source, source.test_client(), db_session)
    # One more photo waits in the spool (the bucket was away when it came).
    with source.app_context(), db.database().session() as db_session:
        staged = services.stage_stream(io.BytesIO(jpeg(999)))
        services.spool().add(staged)
        insert_or_ignore(
            db_session,
            Blob.__table__,
            {"sha256": staged.sha256, "md5": staged.md5, "size": staged.size},
            conflict=["sha256"],
        )
        db_session.commit()
        spooled = staged.sha256
        staged.discard()

    archive = tmp_path / "backup.tar"
    result = invoke(source, backup, str(archive))
    assert result.exit_code == 0, result.output
    assert "keep bucket versioning on" in result.output
    with tarfile.open(archive) as tar:
        kept = dict(
            (line.split("\t")[0], line.split("\t")[3])
            for line in tar.extractfile("attachments.tsv").read().decode().splitlines()[1:]
        )
        in_archive = [n for n in tar.getnames() if n.startswith("blobs/")]
    assert kept[spooled] == "archive"
    assert in_archive == [f"blobs/{spooled[:2]}/{spooled}"]
    assert set(kept.values()) == {"archive", "bucket"}
    source_rows = rows_of(database_url)
    source.extensions["merit.db"].dispose()

    target = make_app(empty_database, tmp_path / "b", STORAGE_URL=url)
    result = invoke(target, restore, str(archive))
    assert result.exit_code == 0, result.output
    assert rows_of(empty_database) == source_rows
    verify = invoke(target, storage, "verify")
    assert verify.exit_code == 0, verify.output
    assert f"{len(kept)} blobs checked, 0 problems" in verify.output
    target.extensions["merit.db"].dispose()


def test_an_archive_from_a_newer_version_is_refused(app, tmp_path, empty_database):
    archive = tmp_path / "backup.tar"
    assert app.test_cli_runner().invoke(backup, [str(archive)]).exit_code == 0
    newer = tmp_path / "newer.tar"
    with tarfile.open(archive) as source, tarfile.open(newer, "w") as out:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name == "manifest.json":
                manifest = json.loads(data)
                manifest["database"]["revision"] = "9999"
                data = json.dumps(manifest).encode()
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    target = make_app(empty_database, tmp_path / "new")
    result = invoke(target, restore, str(newer))
    assert result.exit_code == 1
    assert "revision 9999 is unknown" in result.output
    target.extensions["merit.db"].dispose()
