"""``merit doctor``: every check against the real things, and what it tells the operator to fix."""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess

import pytest
from click.testing import CliRunner

from server.cli import main
from server.ops import doctor
from tests.conftest import make_app
from tests.support import s3
from tests.support.servers import free_port

s3_server = s3.s3_server
s3_bucket = s3.s3_bucket

GOOD_KEY = "k" * 48


def settings(tmp_path, database_url: str, **changes: str | None) -> dict[str, str | None]:
    """A production-like environment, changed as a test needs (None removes a variable)."""
    env: dict[str, str | None] = {
        "MERIT_DATABASE_URL": database_url,
        "MERIT_DATA_DIR": str(tmp_path / "var"),
        "MERIT_STORAGE_URL": str(tmp_path / "blobs"),
        "MERIT_SPOOL_DIR": None,
        "MERIT_SECRET_KEY": GOOD_KEY,
        "MERIT_PUBLIC_URL": "https://collect.example.org",
        "MERIT_TRUST_PROXY": "1",
        "MERIT_SECURE_COOKIES": "true",
        "MERIT_METRICS_TOKEN": "scrape",
        "MERIT_MAX_UPLOAD_BYTES": None,
        "MERIT_SPOOL_MAX_BYTES": None,
        "MERIT_ODK_VALIDATE": None,
        "MERIT_WORKERS": None,
    }
    env.update(changes)
    return env


def run(env: dict[str, str | None]):
    umask = os.umask(0o022)  # `merit` sets its own: keep this process's for the next tests
    try:
        return CliRunner().invoke(main, ["doctor"], env=env)
    finally:
        os.umask(umask)


def lines(output: str, status: str) -> dict[str, str]:
    """The checks that ended with ``status`` (ok, WARN, FAIL), by name, with what follows."""
    found = {}
    rows = output.splitlines()
    for i, row in enumerate(rows):
        if row.startswith(status):
            name = row[6:24].strip()
            following = rows[i + 1] if i + 1 < len(rows) else ""
            found[name] = row[25:] + ("\n" + following.strip() if "fix:" in following else "")
    return found


def test_a_well_configured_server_passes(database_url, tmp_path):
    result = run(settings(tmp_path, database_url))
    assert result.exit_code == 0, result.output
    assert " 0 failed" in result.output
    ok = lines(result.output, "ok")
    for name in ("secret key", "public URL", "database", "migrations", "storage", "spool"):
        assert name in ok, result.output
    assert "clock" in ok
    assert any(name.startswith("disk") for name in ok)
    assert "ODK Validate" in ok or "ODK Validate" in lines(result.output, "WARN")


def test_each_problem_fails_and_says_what_to_fix(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    result = run(
        settings(
            tmp_path,
            f"sqlite:///{tmp_path / 'never-migrated.db'}",
            MERIT_SECRET_KEY="short",
            MERIT_PUBLIC_URL="ftp://collect.example.org",
            MERIT_STORAGE_URL=str(blocker / "blobs"),
        )
    )
    assert result.exit_code == 1
    failed = lines(result.output, "FAIL")
    assert set(failed) >= {"secret key", "public URL", "migrations", "storage"}, result.output
    for name in ("secret key", "public URL", "migrations", "storage"):
        assert "fix:" in failed[name], failed[name]
    assert "merit db upgrade" in failed["migrations"]
    assert "token_urlsafe" in failed["secret key"]


def test_production_needs_the_secret_key_set(database_url, tmp_path):
    result = run(settings(tmp_path, database_url, MERIT_SECRET_KEY=None))
    if database_url.startswith("postgresql"):
        assert result.exit_code == 1
        assert (
            "would not recognise each other's sessions"
            in lines(result.output, "FAIL")["secret key"]
        )
    else:  # one machine, one process family: the generated key is fine
        assert result.exit_code == 0, result.output
        assert "generated and kept" in lines(result.output, "ok")["secret key"]


def test_plain_http_and_missing_proxy_settings_are_warnings(database_url, tmp_path):
    env = settings(
        tmp_path,
        database_url,
        MERIT_PUBLIC_URL="http://collect.example.org",
        MERIT_TRUST_PROXY="0",
        MERIT_METRICS_TOKEN=None,
    )
    result = run(env)
    assert result.exit_code == 0, result.output
    warned = lines(result.output, "WARN")
    assert "never sends Basic credentials over HTTP" in warned["public URL"]
    assert "metrics" in warned
    https = run({**env, "MERIT_PUBLIC_URL": "https://collect.example.org"})
    assert "MERIT_TRUST_PROXY=1" in lines(https.output, "WARN")["proxy"]


def test_java_missing_is_a_warning_naming_the_package(database_url, tmp_path):
    env = settings(tmp_path, database_url, MERIT_ODK_VALIDATE="true", PATH=str(tmp_path))
    result = run(env)
    assert result.exit_code == 0, result.output
    assert "openjdk-17-jre-headless" in lines(result.output, "WARN")["ODK Validate"]


def test_attachments_waiting_in_the_spool_are_reported(database_url, tmp_path):
    app = make_app(database_url, tmp_path)
    with app.app_context():
        from server.storage import services

        staged = services.stage_stream(io.BytesIO(b"a photo the store did not take"))
        services.spool().add(staged)
        staged.discard()
    app.extensions["merit.db"].dispose()
    result = run(settings(tmp_path, database_url))
    assert result.exit_code == 0, result.output
    assert "merit storage drain" in lines(result.output, "WARN")["spool"]


def test_an_unreachable_database_fails(tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/merit"
    result = run(settings(tmp_path, url))
    assert result.exit_code == 1
    assert "unreachable" in lines(result.output, "FAIL")["database"]


def test_a_clock_off_the_database_s_is_a_warning(database_url, tmp_path, monkeypatch):
    for key, value in settings(tmp_path, database_url).items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    skewed = doctor.examine(clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))
    clock = next(f for f in skewed if f.name == "clock")
    if database_url.startswith("postgresql"):
        assert clock.status == doctor.WARN
        assert "+30" in clock.detail and "chrony" in clock.fix
    else:
        assert clock.status == doctor.OK  # SQLite shares this machine's clock


def test_a_clock_far_off_the_bucket_s_fails(database_url, tmp_path, monkeypatch, s3_bucket):
    for key, value in settings(tmp_path, database_url).items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MERIT_STORAGE_URL", f"s3://{s3_bucket}/collect")
    findings = {f.name: f for f in doctor.examine()}
    assert findings["storage"].status == doctor.OK
    assert findings["S3 clock"].status == doctor.OK
    late = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)
    findings = {f.name: f for f in doctor.examine(clock=lambda: late)}
    assert findings["S3 clock"].status == doctor.FAIL
    assert "15 minutes" in findings["S3 clock"].detail


@pytest.mark.parametrize("variable", ["MERIT_WORKERS", "MERIT_MAX_UPLOAD_BYTES"])
def test_a_setting_that_cannot_be_read_fails_first(tmp_path, variable):
    result = run(settings(tmp_path, "sqlite://", **{variable: "many"}))
    assert result.exit_code == 1
    assert variable in lines(result.output, "FAIL")["configuration"]


def test_files_other_accounts_could_read_fail_with_the_command_that_fixes_them(
    database_url, tmp_path
):
    backups = tmp_path / "backups"
    env = settings(tmp_path, database_url, MERIT_BACKUP_DIR=str(backups))
    first = run(env)  # makes the data folder, the store and the spool: private from the start
    assert first.exit_code == 0, first.output
    assert "file modes" in lines(first.output, "ok")

    # What an older version (or a careless copy) leaves: everything readable by everyone.
    data, store = tmp_path / "var", tmp_path / "blobs"
    (data / "secret_key").write_text("k" * 48)
    photo = store / "ab" / "cd" / ("abcd" + "0" * 60)
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"a face")
    backups.mkdir()
    (backups / "merit-backup-20261201T000000Z.tar").write_bytes(b"every HA1")
    database = sqlite_file(database_url)
    opened = [data, data / "secret_key", store, photo.parent.parent, photo.parent, photo]
    opened += [tmp_path / "var" / "spool", backups, *backups.iterdir()]
    opened += [database] if database else []
    for path in opened:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)

    result = run(env)
    assert result.exit_code == 1, result.output
    failed, warned = lines(result.output, "FAIL"), lines(result.output, "WARN")
    expected_failures = {"mode secret key", "mode attachments", "mode backups"}
    if database:
        expected_failures.add("mode database")
    assert expected_failures <= set(failed), result.output
    assert {"mode data folder", "mode spool"} <= set(warned), result.output  # folders only
    assert "Digest HA1" in failed["mode backups"]
    for name, place in (("mode attachments", store), ("mode backups", backups)):
        assert f"fix: chmod -R go-rwx {place}" in failed[name]

    for text in {**failed, **warned}.values():
        command = text.split("fix: ", 1)[1].split("  (", 1)[0]
        # Not checked: SQLite removes its WAL files when the doctor's connection closes.
        subprocess.run(command.split(), check=False, capture_output=True)
    fixed = run(env)
    assert fixed.exit_code == 0, fixed.output
    assert "file modes" in lines(fixed.output, "ok")


def sqlite_file(url: str):
    from server.files import sqlite_path

    return sqlite_path(url)
