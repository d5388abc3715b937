"""The BlobStore contract: every test here runs against the local folder and against S3.

The S3 half talks HTTP to a real S3-protocol server process (moto in server mode, see
tests/support/s3.py) through boto3, unpatched.
"""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc
from pathlib import Path

import pytest
import requests

from server.storage.base import (
    BlobMissing,
    ChecksumMismatch,
    StagedFile,
    StorageUnavailable,
    stage_bytes,
)
from server.storage.local import LocalStore
from server.storage.s3 import S3Store
from tests.support import s3
from tests.support.servers import free_port

s3_server = s3.s3_server
s3_bucket = s3.s3_bucket

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test."""
    return request.param


@pytest.fixture
def blob_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path):
    """An empty store of the backend under test."""
    if backend == "local":
        return LocalStore(tmp_path / "blobs")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store.from_url(f"s3://{bucket}/attachments")


@pytest.fixture
def unreachable_store(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A store of the backend under test that cannot be reached."""
    if backend == "local":
        blocker = tmp_path / "a-file"
        blocker.write_bytes(b"a file where the attachments folder should be")
        return LocalStore(blocker / "blobs")
    # Nothing listens on this port: every request is refused, as when the store is down.
    for key, value in s3.S3Server(tmp_path / "s3", port=free_port()).env.items():
        monkeypatch.setenv(key, value)
    return S3Store.from_url("s3://merit-down/attachments")


def staged(tmp_path: Path, data: bytes) -> StagedFile:
    return stage_bytes(data, tmp_path / "staging")


def read(store, sha256: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(store.open(sha256, start, end))


def photo(size: int = 200_000, seed: int = 0) -> bytes:
    """Bytes that do not compress, like a JPEG's."""
    return hashlib.shake_256(f"photo-{seed}".encode()).digest(size)


def test_a_stored_blob_reads_back_identical(blob_store, tmp_path):
    data = photo()
    file = staged(tmp_path, data)
    blob_store.put(file)
    assert blob_store.exists(file.sha256)
    assert blob_store.size(file.sha256) == len(data)
    assert read(blob_store, file.sha256) == data


def test_identical_files_are_stored_once(blob_store, tmp_path):
    data = photo(seed=1)
    first, second = staged(tmp_path, data), staged(tmp_path, data)
    blob_store.put(first)
    blob_store.put(second)
    assert list(blob_store.keys()) == [first.sha256]


def test_ranges_read_the_requested_bytes(blob_store, tmp_path):
    data = bytes(range(256)) * 40
    file = staged(tmp_path, data)
    blob_store.put(file)
    assert read(blob_store, file.sha256, 10, 19) == data[10:20]
    assert read(blob_store, file.sha256, 10_000) == data[10_000:]
    assert read(blob_store, file.sha256, len(data) - 1, len(data) - 1) == data[-1:]


def test_an_empty_file_is_a_blob_like_any_other(blob_store, tmp_path):
    file = staged(tmp_path, b"")
    blob_store.put(file)
    assert file.sha256 == hashlib.sha256(b"").hexdigest()
    assert blob_store.size(file.sha256) == 0
    assert read(blob_store, file.sha256) == b""


def test_a_missing_blob_is_reported_missing(blob_store):
    absent = hashlib.sha256(b"never stored").hexdigest()
    assert not blob_store.exists(absent)
    with pytest.raises(BlobMissing):
        blob_store.open(absent)
    with pytest.raises(BlobMissing):
        blob_store.size(absent)


def test_delete_removes_a_blob_and_tolerates_absent_ones(blob_store, tmp_path):
    file = staged(tmp_path, photo(seed=2))
    blob_store.put(file)
    blob_store.delete(file.sha256)
    blob_store.delete(file.sha256)
    assert not blob_store.exists(file.sha256)
    assert list(blob_store.keys()) == []


def test_keys_lists_every_blob(blob_store, tmp_path):
    files = [staged(tmp_path, photo(1000, seed=n)) for n in range(5)]
    for file in files:
        blob_store.put(file)
    assert sorted(blob_store.keys()) == sorted(f.sha256 for f in files)


def test_check_passes_on_a_readable_writable_store(blob_store):
    blob_store.check()
    assert list(blob_store.keys()) == []  # the probe leaves nothing behind


def test_names_that_are_not_sha256_are_refused(blob_store):
    with pytest.raises(ValueError, match="SHA-256"):
        blob_store.exists("../../etc/passwd")


def test_a_file_changed_after_staging_is_refused_and_not_stored(blob_store, tmp_path):
    file = staged(tmp_path, photo(seed=3))
    # Same size, other bytes: the disk no longer holds what was hashed.
    file.path.write_bytes(photo(seed=4))
    with pytest.raises(ChecksumMismatch):
        blob_store.put(file)
    assert not blob_store.exists(file.sha256)


def test_a_large_file_is_stored_in_parts_without_being_held_in_memory(
    blob_store, backend, tmp_path, s3_server
):
    size = 37 * MiB
    source = tmp_path / "video.mp4"
    with source.open("wb") as out:
        for n in range(size // MiB):
            out.write(photo(MiB, seed=100 + n))
    with source.open("rb") as handle:
        from server.storage.base import stage

        file = stage(handle, tmp_path / "staging")
    if backend == "s3":
        # S3's smallest part is 5 MiB; this file goes up in eight parts.
        blob_store.part_size = 5 * MiB
        blob_store.multipart_threshold = 6 * MiB
    tracemalloc.start()
    try:
        blob_store.put(file)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size / 2, f"put held {peak} bytes at once for a {size}-byte file"
    assert blob_store.size(file.sha256) == size
    digest = hashlib.sha256()
    for chunk in blob_store.open(file.sha256):
        digest.update(chunk)
    assert digest.hexdigest() == file.sha256
    if backend == "s3":
        head = s3_server.client().head_object(
            Bucket=blob_store.bucket, Key=blob_store.key(file.sha256)
        )
        assert head["ETag"].strip('"').endswith("-8")


def test_s3_a_large_file_changed_after_staging_leaves_no_object_nor_upload(
    s3_bucket, s3_server, tmp_path
):
    store = S3Store.from_url(f"s3://{s3_bucket}/attachments")
    store.part_size, store.multipart_threshold = 5 * MiB, 6 * MiB
    file = staged(tmp_path, photo(11 * MiB, seed=9))
    with file.path.open("r+b") as handle:
        handle.seek(11 * MiB - 1)
        handle.write(b"\0")
    with pytest.raises(ChecksumMismatch):
        store.put(file)
    assert not store.exists(file.sha256)
    uploads = s3_server.client().list_multipart_uploads(Bucket=s3_bucket)
    assert uploads.get("Uploads", []) == []


def test_the_same_blob_stored_by_many_threads_at_once_is_intact(blob_store, tmp_path):
    data = photo(seed=5)
    files = [staged(tmp_path, data) for _ in range(8)]
    errors: list[BaseException] = []

    def put(file: StagedFile) -> None:
        try:
            blob_store.put(file)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(f,)) for f in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert read(blob_store, files[0].sha256) == data
    assert list(blob_store.keys()) == [files[0].sha256]


def test_presigned_urls_exist_only_where_clients_can_fetch_them(blob_store, backend, tmp_path):
    data = photo(seed=6)
    file = staged(tmp_path, data)
    blob_store.put(file)
    url = blob_store.presigned_url(file.sha256, "Photo Ségou.jpg", "image/jpeg")
    if backend == "local":
        assert url is None
        return
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200
    assert answer.content == data
    assert answer.headers["Content-Type"] == "image/jpeg"
    assert "filename*=UTF-8''Photo%20S%C3%A9gou.jpg" in answer.headers["Content-Disposition"]


def test_an_unreachable_store_says_so(unreachable_store, tmp_path):
    file = staged(tmp_path, photo(seed=7))
    with pytest.raises(StorageUnavailable):
        unreachable_store.check()
    with pytest.raises(StorageUnavailable):
        unreachable_store.put(file)


def test_s3_keys_are_spread_under_the_prefix(s3_bucket):
    store = S3Store.from_url(f"s3://{s3_bucket}/collect/")
    sha256 = hashlib.sha256(b"x").hexdigest()
    assert store.key(sha256) == f"collect/{sha256[:2]}/{sha256}"
    assert S3Store.from_url(f"s3://{s3_bucket}").key(sha256) == f"{sha256[:2]}/{sha256}"


def test_s3_reads_fail_as_unavailable_when_the_server_goes_away(tmp_path, monkeypatch):
    with s3.S3Server(tmp_path / "s3") as server:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        bucket = server.create_bucket()
        store = S3Store.from_url(f"s3://{bucket}/attachments")
        file = staged(tmp_path, photo(seed=8))
        store.put(file)
    with pytest.raises(StorageUnavailable):
        store.open(file.sha256)
    with pytest.raises(StorageUnavailable):
        store.exists(file.sha256)


def test_a_missing_bucket_is_an_outage_not_a_lost_file(s3_server, monkeypatch, tmp_path):
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    store = S3Store.from_url("s3://merit-no-such-bucket/attachments")
    with pytest.raises(StorageUnavailable):
        store.put(staged(tmp_path, b"x"))
    with pytest.raises(StorageUnavailable):
        store.check()


def test_only_the_s3_module_imports_boto3():
    root = Path(__file__).resolve().parents[2] / "server"
    importers = {
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if any(
            line.lstrip().startswith(("import boto", "from boto"))
            for line in path.read_text(encoding="utf-8").splitlines()
        )
    }
    assert importers == {os.path.join("storage", "s3.py")}
