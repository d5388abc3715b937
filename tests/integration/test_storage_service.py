"""The storage service: blob durable, then the row; the spool through an S3 outage.

Each test runs on SQLite and PostgreSQL; S3 is moto in server mode, over HTTP, unpatched.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from flask import request

from server import db, errors
from server.storage import operations, services
from server.storage.models import Blob
from tests.conftest import make_app
from tests.support import s3
from tests.support.servers import free_port

s3_server = s3.s3_server
s3_bucket = s3.s3_bucket


def photo(size: int = 200_000, seed: int | str = 0) -> bytes:
    """Bytes that do not compress, like a JPEG's."""
    return hashlib.shake_256(f"photo-{seed}".encode()).digest(size)


def save(db_session, data: bytes) -> Blob:
    """What intake does with each attachment: stage, save, commit, discard the staged copy."""
    staged = services.stage_stream(io.BytesIO(data))
    try:
        blob = services.save(db_session, staged)
        db_session.commit()
        return blob
    finally:
        staged.discard()


def point_at(monkeypatch: pytest.MonkeyPatch, server: s3.S3Server) -> None:
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)


def test_save_stores_the_bytes_then_catalogues_them_once(app):
    data = photo()
    with app.app_context(), db.database().session() as db_session:
        first = save(db_session, data)
        second = save(db_session, data)
        assert first.id == second.id
        assert (first.sha256, first.md5, first.size) == (
            hashlib.sha256(data).hexdigest(),
            hashlib.md5(data).hexdigest(),
            len(data),
        )
        assert db_session.query(Blob).count() == 1
        assert services.read_all(first) == data
        assert services.location(first.sha256) == "store"
        assert list(Path(app.config["DATA_DIR"], "staging").iterdir()) == []


def test_save_stream_on_s3_puts_the_file_in_the_bucket(
    database_url, tmp_path, s3_bucket, s3_server
):
    app = make_app(database_url, tmp_path, STORAGE_URL=f"s3://{s3_bucket}/attachments")
    data = photo(seed="s3")
    with app.app_context(), db.database().session() as db_session:
        blob = services.save_stream(db_session, io.BytesIO(data))
        db_session.commit()
        assert b"".join(services.read(blob, 100, 199)) == data[100:200]
    sha256 = hashlib.sha256(data).hexdigest()
    assert s3_server.objects(s3_bucket) == {f"attachments/{sha256[:2]}/{sha256}": data}


def test_when_the_store_is_down_saves_go_to_the_spool_and_read_from_there(
    database_url, tmp_path, monkeypatch
):
    # Nothing listens there: the store is down from the start.
    point_at(monkeypatch, s3.S3Server(tmp_path / "s3", port=free_port()))
    app = make_app(database_url, tmp_path, STORAGE_URL="s3://merit-down/attachments")
    data = photo(seed="down")
    with app.app_context(), db.database().session() as db_session:
        blob = save(db_session, data)
        assert services.location(blob.sha256) == "spool"
        assert services.read_all(blob) == data
        assert services.spool_report().files == 1
        assert services.drainer().running  # retrying in the background
        assert db_session.get(Blob, blob.id) is not None


def test_an_outage_in_the_middle_of_a_run_of_saves_loses_nothing(
    database_url, tmp_path, monkeypatch
):
    """Issue 5: stop S3 mid-run, keep saving, bring it back, let the spool drain."""
    server = s3.S3Server(tmp_path / "s3", persist=True).start()
    try:
        point_at(monkeypatch, server)
        bucket = server.create_bucket()
        app = make_app(database_url, tmp_path, STORAGE_URL=f"s3://{bucket}/attachments")
        photos = [photo(seed=n) for n in range(30)]
        blobs = []
        with app.app_context(), db.database().session() as db_session:
            for n, data in enumerate(photos):
                if n == 10:
                    server.stop()
                blobs.append(save(db_session, data))
            spooled = [services.spool().contains(b.sha256) for b in blobs]
            assert spooled == [False] * 10 + [True] * 20
            # Downloads work from the spool meanwhile.
            assert [services.read_all(b) for b in blobs[10:]] == photos[10:]
            assert db_session.query(Blob).count() == 30

            server.start()  # the store comes back, with what it held before
            services.drainer().kick()
            assert services.drainer().wait_idle(timeout=120)
            assert services.spool().is_empty()
            assert operations.verify(db_session).problems == []
            names = [b.sha256 for b in blobs]
        stored = server.objects(bucket, "attachments/")
        assert len(stored) == 30
        for sha256, data in zip(names, photos, strict=True):
            assert stored[f"attachments/{sha256[:2]}/{sha256}"] == data
    finally:
        server.stop()


def test_a_full_spool_refuses_with_unavailable_and_retry_after(database_url, tmp_path, monkeypatch):
    point_at(monkeypatch, s3.S3Server(tmp_path / "s3", port=free_port()))
    app = make_app(
        database_url,
        tmp_path,
        STORAGE_URL="s3://merit-down/attachments",
        SPOOL_MAX_BYTES=450_000,
    )
    # Intake saves inside a request (problems are rendered in the client's language).
    with app.test_request_context(), db.database().session() as db_session:
        save(db_session, photo(seed=1))
        save(db_session, photo(seed=2))
        with pytest.raises(errors.Unavailable) as caught:
            save(db_session, photo(seed=3))
        db_session.rollback()
        assert caught.value.status == 503
        assert int(caught.value.headers["Retry-After"]) > 0
        assert services.find(db_session, hashlib.sha256(photo(seed=3)).hexdigest()) is None
        assert services.spool_report().files == 2


def test_the_refusal_reaches_the_client_as_503_with_retry_after(
    database_url, tmp_path, monkeypatch
):
    point_at(monkeypatch, s3.S3Server(tmp_path / "s3", port=free_port()))
    app = make_app(
        database_url, tmp_path, STORAGE_URL="s3://merit-down/attachments", SPOOL_MAX_BYTES=1000
    )

    @app.post("/v1/test-upload")
    def upload():
        blob = services.save_stream(db.session(), request.stream)
        db.session().commit()
        return {"sha256": blob.sha256}, 201

    response = app.test_client().post(
        "/v1/test-upload", data=photo(), headers={"Accept-Language": "en"}
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(services.RETRY_AFTER_SECONDS)
    assert response.json["code"] == 503.2
    assert "safe on the tablet" in response.json["message"]


def test_readyz_checks_the_bucket(database_url, tmp_path, monkeypatch):
    with s3.S3Server(tmp_path / "s3") as server:
        point_at(monkeypatch, server)
        bucket = server.create_bucket()
        app = make_app(database_url, tmp_path, STORAGE_URL=f"s3://{bucket}/attachments")
        client = app.test_client()
        assert client.get("/readyz").json["checks"]["storage"] == "ok"
        missing = make_app(database_url, tmp_path, STORAGE_URL="s3://merit-absent/x")
        absent = missing.test_client().get("/readyz").json["checks"]["storage"]
        assert absent.startswith("degraded") and "bucket does not exist" in absent
    # The store went away: the server still takes records (into the spool), so it stays in
    # the load balancer and says it is degraded.
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"]["storage"].startswith("degraded")


def test_a_worker_finds_files_left_in_the_spool_and_drains_them(app):
    data = photo(seed="left")
    with app.app_context():
        staged = services.stage_stream(io.BytesIO(data))
        services.spool().add(staged)  # as a worker that died before draining left it
        staged.discard()
    app.test_client().get("/healthz")  # any request notices the spool is not empty
    with app.app_context():
        assert services.drainer().wait_idle(timeout=60)
        assert services.spool().is_empty()
        assert services.store().exists(hashlib.sha256(data).hexdigest())


def test_presigned_urls_only_when_configured(database_url, tmp_path, s3_bucket):
    url = f"s3://{s3_bucket}/attachments"
    plain = make_app(database_url, tmp_path, STORAGE_URL=url)
    signed = make_app(database_url, tmp_path, STORAGE_URL=url, S3_PRESIGNED_DOWNLOADS=True)
    with plain.app_context(), db.database().session() as db_session:
        blob = save(db_session, photo())
        assert services.presigned_url(blob, "a.jpg", "image/jpeg") is None
    with signed.app_context():
        assert services.presigned_url(blob, "a.jpg", "image/jpeg").startswith("http://127.0.0.1")
