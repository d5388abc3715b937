"""The S3 blob store: AWS S3 or any S3-compatible server (MinIO, Garage, Ceph), through boto3.

This is the only module that imports boto3. Everything about the connection except the bucket
and prefix comes from boto3's standard configuration, so the same code talks to AWS and to a
MinIO on the next machine:

    MERIT_STORAGE_URL=s3://merit-attachments/collect
    AWS_ENDPOINT_URL_S3=http://minio:9000          (absent for AWS itself)
    AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...  (or AWS_PROFILE, or an instance role)
    AWS_DEFAULT_REGION=eu-west-3

Blobs are stored at ``<prefix>/<aa>/<sha256>``. Writes are verified: the server is given the
MD5 (``Content-MD5``, checked by every S3 implementation) and the SHA-256
(``x-amz-checksum-sha256``, checked by AWS and MinIO) of the staged file, and what it answers
(the ETag, or the checksum it echoes) is compared with ours afterwards, so a server that checks
neither header is still caught. Files above ``multipart_threshold`` go up in parts read one at a
time from the staged file: memory holds one part, never a whole video.

The storage URL may carry ``?addressing_style=virtual`` or ``path``; by default AWS gets
virtual-hosted addressing and every other endpoint path-style, which MinIO and friends need
unless wildcard DNS is set up for them.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError as Urllib3Error

from server.storage.base import (
    CHUNK,
    BlobMissing,
    ChecksumMismatch,
    StagedFile,
    StorageError,
    StorageUnavailable,
    content_disposition,
    is_sha256,
)

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# S3 refuses parts under 5 MiB (except the last); 8 MiB parts keep a 100 MB video at 13 parts.
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_MULTIPART_THRESHOLD = 16 * MiB
PRESIGNED_SECONDS = 300

# Error codes that mean "the store cannot take this now" rather than "this request is wrong":
# the service spools the file and the drainer retries. Credentials and bucket problems are
# here too: an operator fixes them, and meanwhile no tablet should lose a photo.
_UNAVAILABLE_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "NoSuchBucket",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ServiceUnavailable",
    "SignatureDoesNotMatch",
    "SlowDown",
    "ThrottlingException",
    "TokenRefreshRequired",
}
_DIGEST_CODES = {"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"}


class S3Store:
    """Blobs as objects in an S3 bucket, under a prefix."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        addressing_style: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 storage URL needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self.multipart_threshold = max(multipart_threshold, part_size)
        self.client = client or _make_client(addressing_style)

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        """Open the store ``s3://bucket/prefix[?addressing_style=path|virtual]`` names."""
        parts = urlsplit(url)
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        style = options.get("addressing_style")
        if style not in (None, "path", "virtual", "auto"):
            raise ValueError(f"addressing_style must be path, virtual or auto, not {style!r}")
        return cls(parts.netloc, parts.path, addressing_style=style)

    def __repr__(self) -> str:
        return f"S3Store(s3://{self.bucket}/{self.prefix})"

    def key(self, sha256: str) -> str:
        """Return the object key of a blob."""
        if not is_sha256(sha256):
            raise ValueError("not a SHA-256 hex digest")
        name = f"{sha256[:2]}/{sha256}"
        return f"{self.prefix}/{name}" if self.prefix else name

    # ---- writing ---------------------------------------------------------------------------

    def put(self, staged: StagedFile) -> None:
        """Store the staged file under its SHA-256; return once it is durable and verified."""
        key = self.key(staged.sha256)
        with _errors(staged.sha256):
            if self._stored_size(key) == staged.size:
                return  # content-addressed: the same bytes are already there
            if staged.size > self.multipart_threshold:
                self._put_multipart(key, staged)
            else:
                self._put_single(key, staged)

    def _put_single(self, key: str, staged: StagedFile) -> None:
        sha256_b64 = _b64(bytes.fromhex(staged.sha256))
        with staged.open() as body:
            answer = self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentLength=staged.size,
                ContentType="application/octet-stream",
                ContentMD5=_b64(bytes.fromhex(staged.md5)),
                ChecksumSHA256=sha256_b64,
            )
        if not _confirmed(answer, etag=staged.md5, checksum=sha256_b64):
            self._discard(key)
            raise ChecksumMismatch(staged.sha256)

    def _put_multipart(self, key: str, staged: StagedFile) -> None:
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            ContentType="application/octet-stream",
            ChecksumAlgorithm="SHA256",
        )
        upload_id = upload["UploadId"]
        try:
            whole = hashlib.sha256()
            part_md5s, part_sha256s, parts = [], [], []
            with staged.open() as source:
                number = 0
                while data := source.read(self.part_size):
                    number += 1
                    whole.update(data)
                    md5 = hashlib.md5(data, usedforsecurity=False).digest()
                    sha256 = hashlib.sha256(data).digest()
                    answer = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=data,
                        ContentMD5=_b64(md5),
                        ChecksumSHA256=_b64(sha256),
                    )
                    if not _confirmed(answer, etag=md5.hex(), checksum=_b64(sha256)):
                        raise ChecksumMismatch(f"{staged.sha256} part {number}")
                    part_md5s.append(md5)
                    part_sha256s.append(sha256)
                    checksum = _b64(sha256)
                    parts.append(
                        {"ETag": answer["ETag"], "PartNumber": number, "ChecksumSHA256": checksum}
                    )
            # The staged file may have changed on disk since it was hashed: check what was
            # actually read and sent before the object becomes visible.
            if whole.hexdigest() != staged.sha256:
                raise ChecksumMismatch(staged.sha256)
            answer = self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            self._abort(key, upload_id)
            raise
        # S3's multipart ETag is the MD5 of the parts' MD5s, followed by "-<number of parts>";
        # its composite checksum is the same construction with SHA-256.
        count = len(part_md5s)
        etag = hashlib.md5(b"".join(part_md5s), usedforsecurity=False).hexdigest() + f"-{count}"
        checksum = _b64(hashlib.sha256(b"".join(part_sha256s)).digest()) + f"-{count}"
        if not _confirmed(answer, etag=etag, checksum=checksum):
            self._discard(key)
            raise ChecksumMismatch(staged.sha256)

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (BotoCoreError, ClientError):
            # An unfinished upload only costs space; a bucket lifecycle rule removes it.
            log.warning("could not abort multipart upload %s of %s", upload_id, key)

    def _discard(self, key: str) -> None:
        """Remove an object whose content failed verification."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError):
            log.error("could not remove %s after a failed checksum", key)

    # ---- reading ---------------------------------------------------------------------------

    def open(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of a blob (``start``..``end`` inclusive), in chunks."""
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(sha256)}
        if end is not None and end < start:
            return iter(())
        if start or end is not None:
            arguments["Range"] = f"bytes={start}-{'' if end is None else end}"
        with _errors(sha256):
            try:
                answer = self.client.get_object(**arguments)
            except ClientError as exc:
                if _code(exc) == "InvalidRange":
                    return iter(())  # a range starting at the end of the blob: nothing to send
                raise
        # The object is opened now, so a missing blob or an outage is known before the first
        # byte of a response goes out; the body is then read chunk by chunk.
        return _stream(answer["Body"], sha256)

    def _stored_size(self, key: str) -> int | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def exists(self, sha256: str) -> bool:
        """Tell whether a blob is stored."""
        with _errors(sha256):
            return self._stored_size(self.key(sha256)) is not None

    def size(self, sha256: str) -> int:
        """Return the size of a stored blob (raises :class:`BlobMissing`)."""
        with _errors(sha256):
            size = self._stored_size(self.key(sha256))
        if size is None:
            raise BlobMissing(sha256)
        return size

    def delete(self, sha256: str) -> None:
        """Remove a blob if present."""
        with _errors(sha256):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))

    def keys(self) -> Iterator[str]:
        """Yield the SHA-256 of every stored blob."""
        prefix = f"{self.prefix}/" if self.prefix else ""
        with _errors(None):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    name = item["Key"].rpartition("/")[2]
                    if is_sha256(name):
                        yield name

    def check(self) -> None:
        """Check the bucket exists and this server may list, write, read and delete in it."""
        probe = f"{self.prefix}/.probe/{secrets.token_hex(8)}".lstrip("/")
        with _errors(None):
            self.client.head_bucket(Bucket=self.bucket)
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=probe, MaxKeys=1)
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"merit-collect probe")
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=probe)["Body"]
                if body.read() != b"merit-collect probe":
                    raise StorageUnavailable(f"s3://{self.bucket}: probe read back wrong")
            finally:
                self.client.delete_object(Bucket=self.bucket, Key=probe)

    def presigned_url(
        self, sha256: str, filename: str, content_type: str, *, inline: bool = False
    ) -> str | None:
        """Return a URL that downloads the blob directly from the bucket for a few minutes."""
        with _errors(sha256):
            return self.client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": self.key(sha256),
                    "ResponseContentType": content_type,
                    "ResponseContentDisposition": content_disposition(filename, inline=inline),
                },
                ExpiresIn=PRESIGNED_SECONDS,
            )


def _make_client(addressing_style: str | None) -> Any:
    """Create an S3 client from boto3's standard configuration (environment, profile, role)."""
    session = boto3.session.Session()
    settings: dict[str, Any] = {
        # Collect gives up after 60 s; an unreachable store must fail fast enough for the
        # spool to take the file within that, not hang on the default 60 s connect timeout.
        "connect_timeout": 5,
        "read_timeout": 30,
        "retries": {"max_attempts": 3, "mode": "standard"},
        # One worker serves MERIT_THREADS uploads at once; each may hold a connection.
        "max_pool_connections": 64,
        # SigV4 everywhere: MinIO and newer AWS regions accept nothing else, presigned URLs too.
        "signature_version": "s3v4",
    }
    # A region is needed to sign requests; S3-compatible servers accept any, AWS's default.
    region = session.region_name or "us-east-1"
    client = session.client("s3", config=Config(**settings), region_name=region)
    if addressing_style is None:
        host = urlsplit(client.meta.endpoint_url).hostname or ""
        addressing_style = "virtual" if host.endswith(".amazonaws.com") else "path"
    if addressing_style != "auto":
        settings["s3"] = {"addressing_style": addressing_style}
        client = session.client("s3", config=Config(**settings), region_name=region)
    return client


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _confirmed(answer: dict[str, Any], *, etag: str, checksum: str) -> bool:
    """Tell whether the store's answer to a write proves it holds the bytes we sent.

    Either the checksum it echoes is ours (AWS, MinIO), or its ETag is the MD5 we computed
    (every S3 implementation, for unencrypted objects). With SSE-KMS or customer keys the ETag
    is not an MD5, and the Content-MD5 header the server checked is the proof.
    """
    if answer.get("ChecksumSHA256") == checksum:
        return True
    if answer.get("ETag", "").strip('"') == etag:
        return True
    encryption = answer.get("ServerSideEncryption", "")
    return encryption.startswith("aws:kms") or "SSECustomerAlgorithm" in answer


def _stream(body: Any, sha256: str) -> Iterator[bytes]:
    """Yield an object's body in chunks; close the connection when done or abandoned."""
    try:
        with _errors(sha256):
            yield from body.iter_chunks(CHUNK)
    finally:
        body.close()


class _errors:
    """Translate boto3's failures into the storage errors the rest of the server knows."""

    def __init__(self, sha256: str | None) -> None:
        self.sha256 = sha256

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, _tb: object) -> bool:
        if exc is None or isinstance(exc, StorageError):
            return False
        if isinstance(exc, ClientError):
            code = _code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("NoSuchKey", "404", "NotFound"):
                if self.sha256:
                    raise BlobMissing(self.sha256) from exc
                # No object was asked for: what is missing is the bucket.
                raise StorageUnavailable(f"S3 {code}: the bucket does not exist") from exc
            if code in _DIGEST_CODES:
                raise ChecksumMismatch(self.sha256 or code) from exc
            if code in _UNAVAILABLE_CODES or code in ("403", "500", "503") or status >= 500:
                raise StorageUnavailable(f"S3 {code}: {_message(exc)}") from exc
            raise StorageError(f"S3 {code}: {_message(exc)}") from exc
        if isinstance(exc, (BotoCoreError, Urllib3Error, ConnectionError, TimeoutError)):
            # Endpoint unreachable, connection reset, read timeout, credentials not found.
            raise StorageUnavailable(f"S3 unreachable: {exc}") from exc
        return False


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
