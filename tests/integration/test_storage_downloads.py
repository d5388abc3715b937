"""send_blob: what every download view answers (ETag, Range, HEAD, filename*, presigned)."""

from __future__ import annotations

import hashlib
import io

import pytest
import requests
from flask import Flask, request

from server import db
from server.storage import services
from server.storage.downloads import send_blob
from server.storage.models import Blob
from tests.conftest import make_app
from tests.support import s3
from tests.support.servers import free_port

s3_server = s3.s3_server
s3_bucket = s3.s3_bucket

DATA = hashlib.shake_256(b"a photo of a well").digest(100_000)
NAME = "Enquête Ségou.jpg"


def add_download_view(app: Flask) -> None:
    """A view like the ones forms and submissions will have: find the blob, send it."""

    @app.get("/files/<int:blob_id>")
    def download(blob_id: int):
        blob = db.session().get(Blob, blob_id)
        content_type = request.args.get("type", "image/jpeg")
        inline = request.args.get("inline") == "1"
        return send_blob(blob, request.args.get("name", NAME), content_type, inline=inline)


def store_blob(app: Flask, data: bytes = DATA) -> int:
    with app.app_context(), db.database().session() as db_session:
        blob = services.save_stream(db_session, io.BytesIO(data))
        db_session.commit()
        return blob.id


@pytest.fixture
def files(app):
    """A client of an app with one stored photo at /files/<id>; yields (client, id)."""
    add_download_view(app)
    return app.test_client(), store_blob(app)


def test_a_download_sends_the_bytes_with_type_length_etag_and_name(files):
    client, blob_id = files
    response = client.get(f"/files/{blob_id}")
    assert response.status_code == 200
    assert response.data == DATA
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["ETag"] == f'"{hashlib.sha256(DATA).hexdigest()}"'
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Disposition"] == (
        "attachment; filename=\"Enqu_te S_gou.jpg\"; filename*=UTF-8''Enqu%C3%AAte%20S%C3%A9gou.jpg"
    )


def test_a_client_with_the_current_etag_gets_304_and_no_body(files):
    client, blob_id = files
    etag = client.get(f"/files/{blob_id}").headers["ETag"]
    response = client.get(f"/files/{blob_id}", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.data == b""
    assert response.headers["ETag"] == etag
    stale = client.get(f"/files/{blob_id}", headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [("bytes=0-99", 0, 99), ("bytes=99000-", 99_000, 99_999), ("bytes=-10", 99_990, 99_999)],
)
def test_a_range_gives_206_with_those_bytes(files, header, first, last):
    client, blob_id = files
    response = client.get(f"/files/{blob_id}", headers={"Range": header})
    assert response.status_code == 206
    assert response.data == DATA[first : last + 1]
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(DATA)}"
    assert response.headers["Content-Length"] == str(last - first + 1)


def test_a_range_past_the_end_gives_416_with_the_size(files):
    client, blob_id = files
    response = client.get(f"/files/{blob_id}", headers={"Range": "bytes=200000-"})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(DATA)}"


def test_a_resume_of_another_version_of_the_file_gets_the_whole_file(files):
    client, blob_id = files
    response = client.get(
        f"/files/{blob_id}", headers={"Range": "bytes=0-9", "If-Range": '"an-older-file"'}
    )
    assert response.status_code == 200
    assert response.data == DATA
    etag = response.headers["ETag"]
    resumed = client.get(f"/files/{blob_id}", headers={"Range": "bytes=0-9", "If-Range": etag})
    assert resumed.status_code == 206
    assert resumed.data == DATA[:10]


def test_several_ranges_at_once_get_the_whole_file(files):
    client, blob_id = files
    response = client.get(f"/files/{blob_id}", headers={"Range": "bytes=0-1,5-6"})
    assert response.status_code == 200
    assert response.data == DATA


def test_head_gives_the_headers_without_the_body(files):
    client, blob_id = files
    response = client.head(f"/files/{blob_id}")
    assert response.status_code == 200
    assert response.data == b""
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["ETag"] == f'"{hashlib.sha256(DATA).hexdigest()}"'


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html; charset=utf-8",
        "image/svg+xml",
        "application/javascript",
        "text/xml",
        "application/xml",
        "application/xhtml+xml",
        "application/octet-stream",
    ],
)
def test_types_that_could_run_script_are_never_inline(files, content_type):
    client, blob_id = files
    response = client.get(f"/files/{blob_id}", query_string={"type": content_type, "inline": "1"})
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Type"] == content_type


@pytest.mark.parametrize("content_type", ["image/jpeg", "audio/amr", "video/mp4", "text/csv"])
def test_photos_sound_and_video_may_be_shown_inline(files, content_type):
    client, blob_id = files
    response = client.get(f"/files/{blob_id}", query_string={"type": content_type, "inline": "1"})
    assert response.headers["Content-Disposition"].startswith("inline;")


def test_bytes_gone_from_the_store_give_404(files, app):
    client, blob_id = files
    with app.app_context():
        services.store().delete(hashlib.sha256(DATA).hexdigest())
    assert client.get(f"/files/{blob_id}").status_code == 404
    assert client.head(f"/files/{blob_id}").status_code == 404


def test_a_file_waiting_in_the_spool_is_served_from_there(database_url, tmp_path, monkeypatch):
    for key, value in s3.S3Server(tmp_path / "s3", port=free_port()).env.items():
        monkeypatch.setenv(key, value)
    app = make_app(database_url, tmp_path, STORAGE_URL="s3://merit-down/attachments")
    add_download_view(app)
    blob_id = store_blob(app)
    response = app.test_client().get(f"/files/{blob_id}", headers={"Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.data == DATA[10:20]


def test_an_unreachable_store_gives_503_with_retry_after(database_url, tmp_path, monkeypatch):
    with s3.S3Server(tmp_path / "s3") as server:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        app = make_app(
            database_url, tmp_path, STORAGE_URL=f"s3://{server.create_bucket()}/attachments"
        )
        add_download_view(app)
        blob_id = store_blob(app)
    response = app.test_client().get(f"/files/{blob_id}")
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0


def test_presigned_downloads_redirect_to_the_bucket_when_configured(
    database_url, tmp_path, s3_bucket
):
    app = make_app(
        database_url,
        tmp_path,
        STORAGE_URL=f"s3://{s3_bucket}/attachments",
        S3_PRESIGNED_DOWNLOADS=True,
    )
    add_download_view(app)
    blob_id = store_blob(app)
    client = app.test_client()
    response = client.get(f"/files/{blob_id}")
    assert response.status_code == 307
    assert response.headers["Cache-Control"] == "no-store"
    direct = requests.get(response.headers["Location"], timeout=10)
    assert direct.status_code == 200
    assert direct.content == DATA
    assert "filename*=UTF-8''Enqu%C3%AAte%20S%C3%A9gou.jpg" in direct.headers["Content-Disposition"]
    # Types a browser could run are streamed with nosniff, never handed to the bucket.
    html = client.get(f"/files/{blob_id}", query_string={"type": "text/html"})
    assert html.status_code == 200
    assert html.headers["X-Content-Type-Options"] == "nosniff"
