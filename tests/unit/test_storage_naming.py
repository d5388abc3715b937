"""Names and headers of stored files: Content-Disposition, inline rules, S3 URLs and keys."""

from __future__ import annotations

import pytest

from server.storage.base import content_disposition, is_sha256
from server.storage.downloads import may_show_inline
from server.storage.s3 import S3Store

SHA = "ab" * 32


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """boto3 configured from the environment only, with no region and no endpoint."""
    for key in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unit")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit")
    return monkeypatch


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("photo.jpg", "attachment; filename=\"photo.jpg\"; filename*=UTF-8''photo.jpg"),
        (
            "Enquête Ségou.jpg",
            'attachment; filename="Enqu_te S_gou.jpg"; '
            "filename*=UTF-8''Enqu%C3%AAte%20S%C3%A9gou.jpg",
        ),
        (
            'say "hi".txt',
            "attachment; filename=\"say _hi_.txt\"; filename*=UTF-8''say%20%22hi%22.txt",
        ),
        (
            "../../etc/passwd",
            "attachment; filename=\".._.._etc_passwd\"; filename*=UTF-8''.._.._etc_passwd",
        ),
        (
            "a\r\nSet-Cookie: x",
            "attachment; filename=\"a__Set-Cookie: x\"; filename*=UTF-8''a__Set-Cookie%3A%20x",
        ),
        ("", "attachment; filename=\"download\"; filename*=UTF-8''download"),
    ],
)
def test_content_disposition_keeps_utf8_names_and_drops_dangerous_characters(name, expected):
    assert content_disposition(name) == expected


def test_content_disposition_may_ask_for_inline_display():
    assert content_disposition("a.jpg", inline=True).startswith("inline; ")


@pytest.mark.parametrize(
    ("content_type", "inline"),
    [
        ("image/jpeg", True),
        ("IMAGE/PNG", True),
        ("audio/amr", True),
        ("video/3gpp", True),
        ("text/plain; charset=utf-8", True),
        ("text/html", False),
        ("image/svg+xml", False),
        ("application/xml", False),
        ("text/xml", False),
        ("application/javascript", False),
        ("text/javascript", False),
        ("application/xhtml+xml", False),
        ("application/octet-stream", False),
        ("application/vnd.ms-excel", False),
    ],
)
def test_only_types_that_cannot_run_script_are_shown_inline(content_type, inline):
    assert may_show_inline(content_type) is inline


def test_blob_names_are_lowercase_sha256_digests():
    assert is_sha256(SHA)
    assert not is_sha256(SHA.upper())
    assert not is_sha256(SHA[:-1])
    assert not is_sha256("../" + SHA[3:])


def test_s3_url_gives_bucket_and_prefix_and_keys_spread_by_two_hex_digits(aws_env):
    store = S3Store.from_url("s3://merit-attachments/mali/collect/")
    assert (store.bucket, store.prefix) == ("merit-attachments", "mali/collect")
    assert store.key(SHA) == f"mali/collect/ab/{SHA}"
    with pytest.raises(ValueError, match="SHA-256"):
        store.key("not-a-digest")


def test_s3_url_without_a_bucket_is_refused(aws_env):
    with pytest.raises(ValueError, match="bucket"):
        S3Store.from_url("s3:///prefix")


def test_aws_itself_gets_virtual_hosted_addressing_and_other_endpoints_path_style(aws_env):
    aws = S3Store.from_url("s3://merit-attachments")
    assert aws.client.meta.region_name == "us-east-1"  # a region is needed to sign
    assert aws.client.meta.config.s3 == {"addressing_style": "virtual"}
    aws_env.setenv("AWS_ENDPOINT_URL_S3", "http://minio:9000")
    aws_env.setenv("AWS_DEFAULT_REGION", "garage")
    minio = S3Store.from_url("s3://merit-attachments")
    assert minio.client.meta.endpoint_url == "http://minio:9000"
    assert minio.client.meta.region_name == "garage"
    assert minio.client.meta.config.s3 == {"addressing_style": "path"}
    chosen = S3Store.from_url("s3://merit-attachments?addressing_style=virtual")
    assert chosen.client.meta.config.s3 == {"addressing_style": "virtual"}
    with pytest.raises(ValueError, match="addressing_style"):
        S3Store.from_url("s3://merit-attachments?addressing_style=sideways")
