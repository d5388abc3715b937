"""``merit doctor``: check what a running server needs, and say what to fix.

Each check gives ``ok``, ``warn`` (works, but something will bite later) or ``fail`` (the server
cannot do its job), with what was found and, unless ok, what to do about it:

    configuration   secret key, public URL and HTTPS, proxy trust, cookies, /metrics exposure
    database        reachable, migrated to this version, enough connections for the workers
    storage         the store can be listed, written, read and deleted in; the spool too, and
                    what waits in it
    ODK Validate    Java on the PATH (forms are otherwise published without its verdict)
    clock           this machine against PostgreSQL's (and S3's: it refuses skewed requests)
    disk            free space where uploads are staged and the spool grows
    file modes      no other local account can read the data folder, the database, the secret
                    key, attachments, the spool or the backups (they hold every account's
                    Digest HA1, a password equivalent)

"Production" below means a PostgreSQL database: several processes, perhaps several machines,
share it, so settings that a laptop may leave to defaults must be set.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Flask

OK, WARN, FAIL = "ok", "warn", "fail"
# Beyond this the clocks disagree enough to misdate records and confuse operators.
CLOCK_WARN_SECONDS = 5.0
# S3 refuses requests signed more than 15 minutes away from its own clock.
S3_SKEW_FAIL_SECONDS = 15 * 60.0
SPOOL_WARN_SHARE = 0.8
# Connections one worker may open: SQLAlchemy's pool (10) and overflow (30), see server/db.py.
CONNECTIONS_PER_WORKER = 40


@dataclass(frozen=True)
class Finding:
    """One check's verdict."""

    status: str
    name: str
    detail: str
    fix: str = ""


Clock = Callable[[], dt.datetime]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def examine(*, clock: Clock = _now) -> list[Finding]:
    """Run every check against the configuration in the environment."""
    from server import config
    from server.app import create_app

    environ = dict(os.environ)
    try:
        app = create_app()
    except config.ConfigError as exc:
        return [Finding(FAIL, "configuration", str(exc), "fix that variable, then run again")]
    except Exception as exc:  # a URL the database or storage layer cannot use
        return [
            Finding(
                FAIL,
                "configuration",
                f"the server cannot start: {type(exc).__name__}: {exc}",
                "check MERIT_DATABASE_URL and MERIT_STORAGE_URL",
            )
        ]
    findings: list[Finding] = []
    with app.app_context():
        for check in (
            _configuration,
            _database,
            _storage,
            _validate,
            _clocks,
            _disk,
            _file_modes,
        ):
            try:
                findings.extend(check(app, environ, clock))
            except Exception as exc:  # one broken check must not hide the others
                findings.append(
                    Finding(FAIL, check.__name__.strip("_"), f"{type(exc).__name__}: {exc}")
                )
    app.extensions["merit.db"].dispose()
    return findings


def _production(app: Flask) -> bool:
    return app.config["DATABASE_URL"].startswith("postgresql")


# ---- configuration ------------------------------------------------------------------------------


def _configuration(app: Flask, environ: dict[str, str], _clock: Clock) -> Iterator[Finding]:
    key = environ.get("MERIT_SECRET_KEY", "")
    if key and len(key) < 32:
        yield Finding(
            FAIL,
            "secret key",
            f"MERIT_SECRET_KEY has {len(key)} characters: too easy to guess",
            "set 48 random characters: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'",
        )
    elif key:
        yield Finding(OK, "secret key", "set in MERIT_SECRET_KEY")
    elif _production(app):
        yield Finding(
            FAIL,
            "secret key",
            "MERIT_SECRET_KEY is not set: each machine generates its own in its data folder, and "
            "app processes on different machines would not recognise each other's sessions, "
            "Digest nonces or sealed tablet tokens",
            f"set MERIT_SECRET_KEY on every app process to the key in "
            f"{app.config['DATA_DIR']}/secret_key (keep it secret, keep it with the backups)",
        )
    else:
        yield Finding(
            OK, "secret key", f"generated and kept in {app.config['DATA_DIR']}/secret_key"
        )

    public = app.config["PUBLIC_URL"]
    proxies = app.config["TRUST_PROXY"]
    if not public:
        yield Finding(
            WARN,
            "public URL",
            "MERIT_PUBLIC_URL is not set: links in form lists and QR codes use the address of "
            "each request, which behind a proxy may be an internal one",
            "set MERIT_PUBLIC_URL to the address tablets use, e.g. https://collect.example.org",
        )
    else:
        parts = urlsplit(public)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            yield Finding(
                FAIL,
                "public URL",
                f"MERIT_PUBLIC_URL={public} is not an http(s) address",
                "set it to the address tablets use, e.g. https://collect.example.org",
            )
        elif parts.scheme == "http" and not _local(parts.hostname):
            yield Finding(
                WARN,
                "public URL",
                f"{public} is plain HTTP: records and passwords cross the network readable, and "
                "ODK Collect never sends Basic credentials over HTTP",
                "put HTTPS in front (docker/ has an nginx configuration) and use https://",
            )
        else:
            yield Finding(OK, "public URL", public)
        if parts.scheme == "https" and not proxies:
            yield Finding(
                WARN,
                "proxy",
                "the public URL is HTTPS but MERIT_TRUST_PROXY=0: behind a proxy that ends TLS, "
                "the server sees plain HTTP and refuses Basic authentication",
                "set MERIT_TRUST_PROXY=1 (one proxy in front)",
            )
        if parts.scheme == "https" and not app.config["SECURE_COOKIES"]:
            yield Finding(
                WARN,
                "cookies",
                "console cookies may travel over plain HTTP",
                "set MERIT_SECURE_COOKIES=true",
            )
        if not app.config["METRICS_TOKEN"]:
            yield Finding(
                WARN,
                "metrics",
                "/metrics answers anyone who reaches the server",
                "block /metrics at the proxy (the compose file does) or set MERIT_METRICS_TOKEN",
            )
    yield Finding(OK, "storage URL", _store_name(app))


def _local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.endswith((".local", ".lan", ".internal"))
    return address.is_private or address.is_loopback


def _store_name(app: Flask) -> str:
    from server.storage.cli import describe

    return describe(app.extensions["merit.storage"])


# ---- database -----------------------------------------------------------------------------------


def _database(app: Flask, _environ: dict[str, str], _clock: Clock) -> Iterator[Finding]:
    from server import db, migrate

    engine = db.database().engine
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
            revision = migrate.current_revision(connection)
            limit = None
            if engine.dialect.name == "postgresql":
                limit = int(connection.execute(sa.text("SHOW max_connections")).scalar())
                limit -= int(
                    connection.execute(sa.text("SHOW superuser_reserved_connections")).scalar()
                )
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        yield Finding(
            FAIL,
            "database",
            f"unreachable ({engine.url.render_as_string(hide_password=True)}): {reason}",
            "check MERIT_DATABASE_URL, that the database server runs and accepts this user",
        )
        return
    yield Finding(OK, "database", f"reachable ({engine.dialect.name})")
    head = migrate.head_revision()
    if revision == head:
        yield Finding(OK, "migrations", f"at {head}, this version's newest")
    elif revision is None:
        yield Finding(
            FAIL,
            "migrations",
            "the database is empty",
            "run `merit db upgrade` (`merit serve` does it at every start)",
        )
    else:
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        script = ScriptDirectory.from_config(migrate.alembic_config(app.config["DATABASE_URL"]))
        try:
            known = script.get_revision(revision) is not None
        except CommandError:
            known = False
        if known:
            yield Finding(
                FAIL,
                "migrations",
                f"at {revision}, this version needs {head}",
                "run `merit db upgrade` (`merit serve` does it at every start)",
            )
        else:
            yield Finding(
                FAIL,
                "migrations",
                f"at {revision}, which this version does not know: a newer one migrated it",
                "run the newer version of merit-collect",
            )
    if limit is not None:
        needed = app.config["WORKERS"] * CONNECTIONS_PER_WORKER
        if needed > limit:
            yield Finding(
                WARN,
                "connections",
                f"{app.config['WORKERS']} workers may open up to {needed} connections; "
                f"PostgreSQL allows {limit} (and app processes on other machines add up)",
                "raise max_connections in PostgreSQL, or put PgBouncer in front of it",
            )
        else:
            yield Finding(OK, "connections", f"up to {needed} for this process of {limit} allowed")


# ---- storage ------------------------------------------------------------------------------------


def _storage(app: Flask, _environ: dict[str, str], _clock: Clock) -> Iterator[Finding]:
    from server.storage import services
    from server.storage.base import StorageError

    try:
        services.store().check()
        yield Finding(OK, "storage", f"{_store_name(app)}: list, write, read, delete")
    except StorageError as exc:
        yield Finding(
            FAIL,
            "storage",
            f"{_store_name(app)}: {exc}",
            "check MERIT_STORAGE_URL, that the bucket exists and the credentials may list, "
            "write, read and delete in it (`merit storage check`)",
        )
    spool = services.spool()
    try:
        spool.check()
    except StorageError as exc:
        yield Finding(
            FAIL,
            "spool",
            str(exc),
            f"make {spool.directory} a writable folder (MERIT_SPOOL_DIR)",
        )
        return
    report = spool.report()
    share = report.bytes / report.max_bytes if report.max_bytes else 1.0
    if report.files:
        since = f" since {report.oldest:%Y-%m-%d %H:%M} UTC" if report.oldest else ""
        yield Finding(
            FAIL if share >= 1 else WARN,
            "spool",
            f"{report.files} attachments ({report.bytes:,} bytes, {share:.0%} of the bound) "
            f"wait for the store{since}",
            "bring the store back; each worker moves them on its own, or run `merit storage drain`",
        )
    else:
        yield Finding(OK, "spool", f"{spool.directory}: writable, empty")
    if report.corrupt:
        yield Finding(
            WARN,
            "spool",
            f"{report.corrupt} damaged files set aside in {spool.corrupt_dir}",
            "compare them with `merit storage verify`; remove them once understood",
        )


# ---- ODK Validate -------------------------------------------------------------------------------


def _validate(app: Flask, _environ: dict[str, str], _clock: Clock) -> Iterator[Finding]:
    if not app.config["ODK_VALIDATE"]:
        yield Finding(OK, "ODK Validate", "turned off (MERIT_ODK_VALIDATE=false)")
        return
    java = shutil.which("java")
    if java is None:
        yield Finding(
            WARN,
            "ODK Validate",
            "Java is not on the PATH: forms are published without ODK Validate's verdict",
            "install a Java runtime (Debian: apt install openjdk-17-jre-headless), or set "
            "MERIT_ODK_VALIDATE=false",
        )
        return
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [java, "-version"], capture_output=True, timeout=20, check=False
        )
        version = (result.stderr or result.stdout).decode(errors="replace").splitlines()
    except (OSError, subprocess.TimeoutExpired) as exc:
        yield Finding(WARN, "ODK Validate", f"{java} does not run: {exc}", "reinstall Java")
        return
    from server.forms.compiler import validator_jar

    if validator_jar() is None:
        yield Finding(
            WARN,
            "ODK Validate",
            "the ODK Validate jar pyxform ships is missing",
            "reinstall pyxform (pip install --force-reinstall pyxform)",
        )
        return
    yield Finding(OK, "ODK Validate", version[0] if version else java)


# ---- clocks -------------------------------------------------------------------------------------


def _clocks(app: Flask, _environ: dict[str, str], clock: Clock) -> Iterator[Finding]:
    from server import db

    engine = db.database().engine
    fix = "turn on time synchronisation (chrony or systemd-timesyncd) on both machines"
    if engine.dialect.name == "postgresql":
        try:
            with engine.connect() as connection:
                before = time.monotonic()
                theirs = connection.execute(sa.text("SELECT clock_timestamp()")).scalar()
                trip = time.monotonic() - before
        except sa.exc.SQLAlchemyError:
            return  # the database check says why
        # The server read its clock somewhere during the round trip: compare with the middle.
        ours = clock() - dt.timedelta(seconds=trip / 2)
        skew = (ours - theirs).total_seconds()
        if abs(skew) > CLOCK_WARN_SECONDS:
            yield Finding(
                WARN,
                "clock",
                f"this machine is {skew:+.1f} s off PostgreSQL's clock: records and audit "
                "events get times the database and the server disagree on",
                fix,
            )
        else:
            yield Finding(OK, "clock", f"{skew:+.2f} s from PostgreSQL's")
    else:
        yield Finding(OK, "clock", "SQLite runs in this process: one clock")
    client = getattr(app.extensions["merit.storage"], "client", None)
    bucket = getattr(app.extensions["merit.storage"], "bucket", None)
    if client is None:
        return
    try:
        answer = client.head_bucket(Bucket=bucket)
        stamp = answer["ResponseMetadata"]["HTTPHeaders"].get("date")
    except Exception:  # the storage check says why
        return
    if not stamp:
        return
    skew = (clock() - email.utils.parsedate_to_datetime(stamp)).total_seconds()
    if abs(skew) > S3_SKEW_FAIL_SECONDS:
        yield Finding(
            FAIL,
            "S3 clock",
            f"this machine is {skew:+.0f} s off the store's clock: S3 refuses requests signed "
            "more than 15 minutes away",
            fix,
        )
    elif abs(skew) > CLOCK_WARN_SECONDS + 1:  # the Date header has whole seconds
        yield Finding(WARN, "S3 clock", f"this machine is {skew:+.0f} s off the store's", fix)
    else:
        yield Finding(OK, "S3 clock", f"{skew:+.0f} s from the store's")


# ---- disk ---------------------------------------------------------------------------------------


def _disk(app: Flask, _environ: dict[str, str], _clock: Clock) -> Iterator[Finding]:
    places = {
        "data folder": Path(app.config["DATA_DIR"]),
        "spool": Path(app.config["SPOOL_DIR"]),
    }
    seen: set[int] = set()
    for name, path in places.items():
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        device = existing.stat().st_dev
        if device in seen:
            continue
        seen.add(device)
        usage = shutil.disk_usage(existing)
        free = usage.free
        fix = f"free space on the disk holding {path}, or move it (MERIT_DATA_DIR, MERIT_SPOOL_DIR)"
        upload = app.config["MAX_UPLOAD_BYTES"]
        if free < 2 * upload:
            yield Finding(
                FAIL,
                f"disk ({name})",
                f"{_gb(free)} free: not even two of the largest uploads fit",
                fix,
            )
        elif free < app.config["SPOOL_MAX_BYTES"] or free < usage.total * 0.1:
            yield Finding(
                WARN,
                f"disk ({name})",
                f"{_gb(free)} free of {_gb(usage.total)}: less than the spool may need "
                f"({_gb(app.config['SPOOL_MAX_BYTES'])}) or under 10 %",
                fix,
            )
        else:
            yield Finding(OK, f"disk ({name})", f"{_gb(free)} free of {_gb(usage.total)}")


# ---- file modes ---------------------------------------------------------------------------------

# What another account on the machine gets from each place.
EXPOSES = {
    "data folder": "uploads on their way in and the first administrator's password",
    "database": "every account's Digest HA1 (a password equivalent) and every record",
    "secret key": "the key that signs sessions and seals app-user tokens",
    "attachments": "every photo and file sent with the records",
    "spool": "photos and files waiting for the store",
    "backups": "every record, every account's Digest HA1 and the secret key",
}


def _file_modes(app: Flask, _environ: dict[str, str], _clock: Clock) -> Iterator[Finding]:
    from server import files

    places = files.private_places(app.config)
    clean = True
    for role, paths in places.items():
        # A place inside another (the database in the data folder) is reported on its own.
        inner = [p for r, ps in places.items() if r != role for p in ps if paths[0] in p.parents]
        entries = [
            (path, status)
            for place in paths
            for path, status in files.loose(place)
            if not any(path == other or other in path.parents for other in inner)
        ]
        if not entries:
            continue
        clean = False
        readable = [(p, s) for p, s in entries if not stat.S_ISDIR(s.st_mode)]
        shown = ", ".join(
            f"{p} ({stat.S_IMODE(s.st_mode):04o})" for p, s in (readable or entries)[:3]
        )
        count = f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'}"
        if paths[0].is_dir():
            fix = f"chmod -R go-rwx {paths[0]}"
        else:
            fix = "chmod go-rwx " + " ".join(str(p) for p, _ in entries)
        yield Finding(
            FAIL if readable else WARN,
            f"mode {role}",
            f"{count} other local accounts can read or list ({shown}), holding {EXPOSES[role]}",
            f"{fix}  (`merit serve` makes its own places private at every start)",
        )
    if clean:
        shown = ", ".join(role for role, paths in places.items() if paths[0].exists())
        yield Finding(OK, "file modes", f"{shown}: this account only")


def _gb(count: int) -> str:
    return f"{count / 1e9:.1f} GB"
