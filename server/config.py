"""Every setting of the server, in one table, read from the environment.

Each row names the environment variable, its type, its default and what it does. The README's
configuration table is checked against this one by the test suite, so the two cannot drift.
Defaults are the embedded ones: SQLite and a local attachments folder under ``var/``.

Request bodies, and the numbers behind their limits. A tablet on a weak 2G link sends 2 to
10 KB/s (EDGE several times more), with pauses when the signal drops; it must always get
through. A client that sends slower than any phone, or that has no credentials and opens
connection after connection, must not take the threads everyone else needs
(:mod:`server.ops.buffering` applies these):

* ``MERIT_UPLOAD_STALL_SECONDS`` (120): the longest silence between two bytes. ODK Collect
  itself gives up after 60 s.
* ``MERIT_UPLOAD_GRACE_SECONDS`` (60) and ``MERIT_UPLOAD_MIN_BYTES_PER_SECOND`` (500): once
  the grace time has passed, a body must have arrived at 500 B/s on average since it began,
  at every moment (received >= 500 x (elapsed - 60)), so that a body of S bytes is received
  within 60 s + S / 500 at most: a 5 MB photo within about 3 hours. A tablet at 2 KB/s sends
  it in 43 minutes, four times faster than the minimum; a pause of a minute is covered from
  the start, and a longer one once the upload is ahead of the minimum (each second at 2 KB/s
  buys three seconds of pause). Apache's ``mod_reqtimeout`` has the same minimum rate by
  default. A client sending one byte every 10 s is cut after about a minute, whatever size
  it declared.
* ``MERIT_ANONYMOUS_BODIES`` (a quarter of ``MERIT_THREADS``: 8 of 32) and
  ``MERIT_ANONYMOUS_BODIES_PER_CLIENT`` (2): bodies from clients without credentials (sign-in
  forms, ``POST /v1/sessions``: a few hundred bytes each) that one worker receives at once. The
  other three quarters of the threads stay for tablets, signed-in users and health checks,
  however many anonymous connections arrive. Both count per worker process.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server import files


def _bool(value: str) -> bool:
    """Parse a boolean the way people write them in environment files."""
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class Setting:
    """One configuration setting: its key in ``app.config``, environment variable and default."""

    key: str
    env: str
    parse: Callable[[str], Any]
    default: Any
    doc: str

    @property
    def type_name(self) -> str:
        return {str: "text", int: "integer", _bool: "boolean", float: "number"}.get(
            self.parse, "text"
        )


# The settings table. Keep one line of documentation per setting: the README shows it as is.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DATA_DIR",
        "MERIT_DATA_DIR",
        str,
        "var",
        "Folder for local state: SQLite database, attachments, spool, generated secrets.",
    ),
    Setting(
        "DATABASE_URL",
        "MERIT_DATABASE_URL",
        str,
        "",
        "SQLAlchemy database URL; empty means SQLite at `<data dir>/merit.db`. "
        "Production: `postgresql://user:password@host/dbname`.",
    ),
    Setting(
        "STORAGE_URL",
        "MERIT_STORAGE_URL",
        str,
        "",
        "Where attachments live: a folder path, or `s3://bucket/prefix`; empty means "
        "`<data dir>/blobs`. S3 endpoint and credentials come from boto3's usual "
        "variables (`AWS_ENDPOINT_URL_S3`, `AWS_ACCESS_KEY_ID`, ...).",
    ),
    Setting(
        "SPOOL_DIR",
        "MERIT_SPOOL_DIR",
        str,
        "",
        "Durable local spool for attachments while the object store is unreachable; "
        "empty means `<data dir>/spool`.",
    ),
    Setting(
        "SPOOL_MAX_BYTES",
        "MERIT_SPOOL_MAX_BYTES",
        int,
        2_000_000_000,
        "Bound of the spool; beyond it tablets get 503 with Retry-After and retry later.",
    ),
    Setting(
        "BACKUP_DIR",
        "MERIT_BACKUP_DIR",
        str,
        "",
        "Folder `merit backup` writes to when given no target (made 0700, archives 0600); "
        "`merit doctor` checks that no other account can read it. Empty means none.",
    ),
    Setting(
        "S3_PRESIGNED_DOWNLOADS",
        "MERIT_S3_PRESIGNED_DOWNLOADS",
        _bool,
        False,
        "Redirect downloads to short-lived presigned S3 URLs instead of streaming them "
        "through the server (only when clients can reach the bucket).",
    ),
    Setting(
        "SECRET_KEY",
        "MERIT_SECRET_KEY",
        str,
        "",
        "Key that signs sessions, nonces and pseudonyms; empty means one generated once "
        "and kept in `<data dir>/secret_key`. Set it in production and keep it secret.",
    ),
    Setting(
        "PUBLIC_URL",
        "MERIT_PUBLIC_URL",
        str,
        "",
        "Address tablets and browsers use to reach the server (for example "
        "`https://collect.example.org`); empty means the address of each request.",
    ),
    Setting(
        "HOST",
        "MERIT_HOST",
        str,
        "127.0.0.1",
        "Interface the server listens on (`0.0.0.0` to accept tablets on the network).",
    ),
    Setting("PORT", "MERIT_PORT", int, 8080, "Port the server listens on."),
    Setting("WORKERS", "MERIT_WORKERS", int, 2, "Number of gunicorn worker processes."),
    Setting(
        "THREADS",
        "MERIT_THREADS",
        int,
        32,
        "Threads per worker: slow mobile uploads each hold one while they trickle in.",
    ),
    Setting(
        "MAX_UPLOAD_BYTES",
        "MERIT_MAX_UPLOAD_BYTES",
        int,
        100_000_000,
        "Largest request body accepted. ODK Collect is told 102 KiB less "
        "(`X-OpenRosa-Accept-Content-Length`), room for the multipart framing it does not count.",
    ),
    Setting(
        "UPLOAD_STALL_SECONDS",
        "MERIT_UPLOAD_STALL_SECONDS",
        int,
        120,
        "How long an upload may send nothing before the server gives up on it and frees its "
        "thread (ODK Collect itself gives up after 60 s).",
    ),
    Setting(
        "UPLOAD_GRACE_SECONDS",
        "MERIT_UPLOAD_GRACE_SECONDS",
        int,
        60,
        "Time an upload may take, from its first byte, before the minimum rate applies "
        "(a 2G radio waking up, TCP's slow start over a long round trip).",
    ),
    Setting(
        "UPLOAD_MIN_BYTES_PER_SECOND",
        "MERIT_UPLOAD_MIN_BYTES_PER_SECOND",
        int,
        500,
        "After the grace time, a request body must keep at least this average rate since its "
        "start, or it is given up (408): a 5 MB photo may take 60 s + 5 MB / 500 B/s, about 3 h.",
    ),
    Setting(
        "ANONYMOUS_BODIES",
        "MERIT_ANONYMOUS_BODIES",
        int,
        0,
        "Request bodies a worker receives at once from clients without credentials; more are "
        "refused unread (503, Retry-After). 0 means a quarter of `MERIT_THREADS`.",
    ),
    Setting(
        "ANONYMOUS_BODIES_PER_CLIENT",
        "MERIT_ANONYMOUS_BODIES_PER_CLIENT",
        int,
        2,
        "Of those, how many one client address may send at once (an IPv6 /64 counts as one).",
    ),
    Setting(
        "DEFAULT_LANGUAGE",
        "MERIT_DEFAULT_LANGUAGE",
        str,
        "fr",
        "Language of pages and tablet messages when the client does not choose (fr or en).",
    ),
    Setting(
        "ADMIN_EMAIL",
        "MERIT_ADMIN_EMAIL",
        str,
        "admin@example.org",
        "Email of the administrator created on first start.",
    ),
    Setting(
        "ADMIN_PASSWORD",
        "MERIT_ADMIN_PASSWORD",
        str,
        "",
        "Password of that administrator; empty means one generated, printed once and "
        "kept in `<data dir>/admin-password.txt`.",
    ),
    Setting(
        "DEFAULT_PROJECT_NAME",
        "MERIT_DEFAULT_PROJECT_NAME",
        str,
        "Programme Mali",
        "Name of the project created on first start (id 1).",
    ),
    Setting(
        "FORMS_DIR",
        "MERIT_FORMS_DIR",
        str,
        "forms",
        "Folder of compiled XForms published into the default project on start.",
    ),
    Setting(
        "SESSION_HOURS",
        "MERIT_SESSION_HOURS",
        int,
        24,
        "Lifetime of a console session or API bearer token, in hours.",
    ),
    Setting(
        "SECURE_COOKIES",
        "MERIT_SECURE_COOKIES",
        _bool,
        False,
        "Send console cookies only over HTTPS (turn on behind TLS).",
    ),
    Setting(
        "TRUST_PROXY",
        "MERIT_TRUST_PROXY",
        int,
        0,
        "Number of reverse proxies in front whose `X-Forwarded-*` headers are trusted.",
    ),
    Setting("LOG_LEVEL", "MERIT_LOG_LEVEL", str, "INFO", "Logging level (DEBUG, INFO, WARNING)."),
    Setting(
        "LOG_JSON",
        "MERIT_LOG_JSON",
        _bool,
        True,
        "One JSON line per request and event (off: plain text for development).",
    ),
    Setting(
        "METRICS_TOKEN",
        "MERIT_METRICS_TOKEN",
        str,
        "",
        "Bearer token Prometheus must send to read `/metrics`; empty leaves it open (block it "
        "at the proxy, as the compose file does).",
    ),
    Setting(
        "ODK_VALIDATE",
        "MERIT_ODK_VALIDATE",
        _bool,
        True,
        "Run ODK Validate (needs Java) on every uploaded form and keep its verdict.",
    ),
    Setting(
        "LOGIN_MAX_FAILURES",
        "MERIT_LOGIN_MAX_FAILURES",
        int,
        5,
        "Failed logins allowed for one account before it is locked for a while.",
    ),
    Setting(
        "LOGIN_LOCK_MINUTES",
        "MERIT_LOGIN_LOCK_MINUTES",
        int,
        15,
        "How long an account stays locked after too many failed logins.",
    ),
    Setting(
        "TILE_URL",
        "MERIT_TILE_URL",
        str,
        "",
        "Map tile server for the console map (`https://.../{z}/{x}/{y}.png`); empty draws "
        "points on a plain background, with no outside network.",
    ),
    Setting(
        "ENTITY_BACKLOG_HOURS",
        "MERIT_ENTITY_BACKLOG_HOURS",
        int,
        120,
        "How long an entity update made offline waits for the tablet's earlier update of the "
        "same entity before it is applied on top of the latest version (Central waits 5 days).",
    ),
)

SETTINGS_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}


class ConfigError(ValueError):
    """A setting in the environment cannot be read."""


def load(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read every setting from ``environ`` (default: the process environment), then overrides."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if raw is None:
            values[setting.key] = setting.default
            continue
        try:
            values[setting.key] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{setting.env}: {exc}") from exc
    for key, value in (overrides or {}).items():
        values[key] = value
    return resolve(values)


def resolve(values: dict[str, Any]) -> dict[str, Any]:
    """Fill the settings whose default depends on the data folder."""
    data_dir = Path(values["DATA_DIR"]).resolve()
    values["DATA_DIR"] = str(data_dir)
    if not values.get("DATABASE_URL"):
        values["DATABASE_URL"] = f"sqlite:///{data_dir / 'merit.db'}"
    if not values.get("STORAGE_URL"):
        values["STORAGE_URL"] = str(data_dir / "blobs")
    if not values.get("SPOOL_DIR"):
        values["SPOOL_DIR"] = str(data_dir / "spool")
    for key in ("UPLOAD_MIN_BYTES_PER_SECOND", "ANONYMOUS_BODIES_PER_CLIENT"):
        if values[key] < 1:
            raise ConfigError(f"{SETTINGS_BY_KEY[key].env}: must be at least 1")
    if values["ANONYMOUS_BODIES"] <= 0:
        values["ANONYMOUS_BODIES"] = max(1, values["THREADS"] // 4)
    if values.get("DEFAULT_LANGUAGE") not in ("fr", "en"):
        raise ConfigError("MERIT_DEFAULT_LANGUAGE: must be fr or en")
    if values.get("PUBLIC_URL"):
        values["PUBLIC_URL"] = values["PUBLIC_URL"].rstrip("/")
    if not values.get("SECRET_KEY"):
        values["SECRET_KEY"] = _local_secret(data_dir)
    return values


def _local_secret(data_dir: Path) -> str:
    """Return the development secret kept in the data folder, creating it once."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    key = secrets.token_urlsafe(48)
    # Written to a private temporary file, then linked into place: link() fails if another
    # worker got there first, so every process ends up with the same complete key.
    handle, temp = files.private_temp(data_dir, ".secret_key.")
    with handle:
        handle.write(key.encode("ascii"))
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(temp, path)
    except FileExistsError:
        key = path.read_text(encoding="ascii").strip()
    finally:
        temp.unlink()
    return key


def markdown_table() -> str:
    """Return the settings table as the README shows it (the README is checked against this)."""

    def shown(value: Any) -> str:
        if value == "":
            return "(empty)"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    lines = ["| Variable | Type | Default | What it does |", "|---|---|---|---|"]
    lines += [f"| `{s.env}` | {s.type_name} | {shown(s.default)} | {s.doc} |" for s in SETTINGS]
    return "\n".join(lines)
