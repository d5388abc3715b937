"""Backups and restores: one archive that brings a new machine back.

``merit backup`` writes a tar archive:

    database/<table>.jsonl.gz   every row of every table, read in one consistent snapshot
    attachments.tsv             the manifest: sha256, md5, size and where each blob is kept
    blobs/<aa>/<sha256>         the attachments themselves, when the archive keeps them
    secret_key                  the generated secret key, when MERIT_SECRET_KEY is not set
    manifest.json               what the archive holds, with the SHA-256 of every file above

The database is dumped logically, through SQLAlchemy, not with ``pg_dump``: the same archive
restores into SQLite or PostgreSQL, needs no client tools of the database's exact version on
the machine, and can be checked file by file. Rows are read in one transaction (PostgreSQL:
REPEATABLE READ, read only; SQLite: a read transaction in WAL mode), so every table shows the
same moment. Values keep their types through tags (timestamps, JSON documents, bytes).

Attachments are content-addressed and never change, so copying them after the snapshot is
consistent: every blob the snapshot references is copied (or recorded as missing). With a
local folder store they go into the archive; with S3 they stay in the bucket by default
(``--attachments bucket``: turn bucket versioning on, so that nothing the archive names can be
lost), except those still waiting in the local spool, which the bucket does not have yet.

``manifest.json`` is written last: an archive cut short has none and is refused.
:mod:`server.ops.restore` brings an archive back, all of it or nothing.

The archive holds every account's Digest HA1 and, unless ``MERIT_SECRET_KEY`` is set, the
secret key: it is written 0600 wherever it goes (as a ``.partial`` file renamed when complete),
through a private scratch folder beside it; with no target, into ``MERIT_BACKUP_DIR``, which
is made 0700.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

import server
from server import db, migrate
from server.db import UTCDateTime
from server.files import fsync_directory, open_private, private_dir, scratch_dir
from server.models import Base
from server.storage import services
from server.storage.base import BlobMissing, stage
from server.storage.operations import ChunkReader

FORMAT = "merit-backup"
FORMAT_VERSION = 1
BATCH = 1000
# Tables a fresh database may hold before anything happened (the system roles, which every
# start puts back): a restore replaces them without asking.
SEEDED = {"roles"}


class BackupError(Exception):
    """The backup or restore cannot go on; the message says what to do."""


@dataclass
class BackupReport:
    """What a backup wrote."""

    path: Path
    rows: dict[str, int] = field(default_factory=dict)
    blobs_in_archive: int = 0
    blobs_in_bucket: int = 0
    bytes_in_archive: int = 0
    missing: list[str] = field(default_factory=list)


# ---- values -------------------------------------------------------------------------------------


def _kind(column: sa.Column) -> str:
    """Tag a column with how its values are written to JSON and read back."""
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return "utc"
    if isinstance(kind, sa.JSON):
        return "json"
    if isinstance(kind, sa.DateTime):
        return "datetime"
    if isinstance(kind, sa.Date):
        return "date"
    if isinstance(kind, sa.LargeBinary):
        return "bytes"
    if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
        return "decimal"
    return "plain"


def _encode(kind: str, value: Any) -> Any:
    if value is None or kind in ("plain", "json"):
        return value
    if kind in ("utc", "datetime", "date"):
        return value.isoformat()
    if kind == "bytes":
        return base64.b64encode(value).decode("ascii")
    return str(value)  # decimal


def decode_value(kind: str, value: Any) -> Any:
    """Read back a value :func:`_encode` wrote for a column of that kind."""
    if value is None:
        return None
    if kind == "json":
        # SQL NULL was written as null; a JSON document that is itself null as the text "null".
        document = json.loads(value)
        return sa.JSON.NULL if document is None else document
    if kind in ("utc", "datetime"):
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "bytes":
        return base64.b64decode(value)
    if kind == "decimal":
        from decimal import Decimal

        return Decimal(value)
    return value


def load_type(kind: str) -> Any:
    """The column type that binds a decoded value the way the model's own type would."""
    return {
        "utc": UTCDateTime(),
        "json": sa.JSON(none_as_null=True).with_variant(
            postgresql.JSONB(none_as_null=True), "postgresql"
        ),
        "datetime": sa.DateTime(),
        "date": sa.Date(),
        "bytes": sa.LargeBinary(),
        "decimal": sa.Numeric(),
    }.get(kind)


def _deferred_columns() -> dict[str, list[str]]:
    """Columns loaded as NULL then set once every table is in: the ends of foreign-key cycles."""
    deferred: dict[str, list[str]] = {}
    for table in Base.metadata.sorted_tables:
        for key in table.foreign_keys:
            if key.use_alter:
                deferred.setdefault(table.name, []).append(key.parent.name)
    return deferred


def fingerprint(secret_key: str) -> str:
    """Name a secret key without revealing it (to tell whether two machines share it)."""
    return hashlib.sha256(b"merit-collect secret key\0" + secret_key.encode()).hexdigest()[:16]


# ---- backup -------------------------------------------------------------------------------------


def archive_path(target: str | Path) -> Path:
    """Return the archive file a target names: a file, or a new dated file in a folder."""
    target = Path(target)
    if target.is_dir():
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        return target / f"merit-backup-{stamp}.tar"
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a folder")
    return target


def backup(
    app: Flask,
    target: str | Path | None = None,
    *,
    attachments: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> BackupReport:
    """Write an archive of the database and the attachments to ``target``; return a report.

    ``target``: a file or a folder; None means ``MERIT_BACKUP_DIR`` (made 0700 if missing).
    ``attachments``: ``archive`` copies every blob into the archive, ``bucket`` leaves them in
    the S3 bucket (except those still in the spool), ``auto`` is ``bucket`` for S3 and
    ``archive`` for a local folder.
    """
    say = progress or (lambda _message: None)
    if target is None:
        if not app.config["BACKUP_DIR"]:
            raise BackupError("name the archive's folder or file, or set MERIT_BACKUP_DIR")
        target = private_dir(app.config["BACKUP_DIR"])
    path = archive_path(target)
    database = db.database()
    store = services.store()
    if attachments == "auto":
        attachments = "bucket" if getattr(store, "bucket", None) else "archive"
    if attachments not in ("archive", "bucket"):
        raise BackupError(f"--attachments must be auto, archive or bucket, not {attachments!r}")
    if attachments == "bucket" and not getattr(store, "bucket", None):
        raise BackupError("--attachments bucket needs an S3 store; this one is a local folder")

    report = BackupReport(path)
    partial = path.with_name(path.name + ".partial")
    files: dict[str, str] = {}
    # The archive holds every account's Digest HA1 and the secret key: private from its first
    # byte, in the operator's folder as anywhere else.
    try:
        with (
            scratch_dir(path.parent, ".merit-backup-") as scratch,
            open_private(partial, "wb") as out,
        ):
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tables, blobs, revision = _dump_database(database, scratch, tar, files, report, say)
                say(f"attachments: {len(blobs)} blobs ({attachments})")
                manifest_lines = _copy_blobs(blobs, attachments, scratch, tar, files, report)
                _add_bytes(tar, "attachments.tsv", manifest_lines.encode(), files)
                secret = _secret_entry(app, tar, files)
                manifest = {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "created_at": dt.datetime.now(dt.UTC).isoformat(),
                    "server_version": server.__version__,
                    "database": {
                        "dialect": database.engine.dialect.name,
                        "revision": revision,
                        "tables": tables,
                        "deferred": _deferred_columns(),
                    },
                    "attachments": {
                        "mode": attachments,
                        "store": _describe(store),
                        "blobs": len(blobs),
                        "in_archive": report.blobs_in_archive,
                        "in_bucket": report.blobs_in_bucket,
                        "bytes_in_archive": report.bytes_in_archive,
                        "missing": report.missing,
                    },
                    "secret_key": secret,
                    "files": files,
                }
                # Last: an archive cut short has no manifest, and restore refuses it.
                _add_bytes(tar, "manifest.json", json.dumps(manifest, indent=2).encode(), {})
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    fsync_directory(path.parent)
    return report


def _dump_database(
    database: db.Database,
    scratch: Path,
    tar: tarfile.TarFile,
    files: dict[str, str],
    report: BackupReport,
    say: Callable[[str], None],
) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str, int]], str]:
    """Dump every table from one snapshot; return table facts, the blobs, the revision."""
    engine = database.read_engine
    options: dict[str, Any] = {}
    if engine.dialect.name == "postgresql":
        options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    tables: dict[str, dict[str, Any]] = {}
    with engine.connect().execution_options(**options) as connection, connection.begin():
        revision = migrate.current_revision(connection)
        if revision != migrate.head_revision():
            raise BackupError(
                f"the database is at revision {revision}, this server expects "
                f"{migrate.head_revision()}: run `merit db upgrade` first"
            )
        for table in Base.metadata.sorted_tables:
            name = f"database/{table.name}.jsonl.gz"
            local = scratch / f"{table.name}.jsonl.gz"
            rows = _dump_table(connection, table, local)
            _add_file(tar, name, local, files)
            local.unlink()
            tables[table.name] = {"rows": rows, "file": name}
            report.rows[table.name] = rows
            say(f"  {table.name}: {rows} rows")
        blob_table = Base.metadata.tables["blobs"]
        blobs = [
            (row.sha256, row.md5, row.size)
            for row in connection.execute(
                sa.select(blob_table.c.sha256, blob_table.c.md5, blob_table.c.size).order_by(
                    blob_table.c.id
                )
            )
        ]
    return tables, blobs, revision


def _dump_table(connection: Connection, table: sa.Table, path: Path) -> int:
    """Write a table's rows as JSON lines (first line: the columns and their kinds)."""
    columns = list(table.columns)
    kinds = [_kind(c) for c in columns]
    pairs = list(zip(columns, kinds, strict=True))
    # JSON documents are read as their text, so that SQL NULL and a JSON null stay apart.
    selected = [sa.cast(c, sa.Text) if k == "json" else c for c, k in pairs]
    order = list(table.primary_key.columns) or columns
    query = sa.select(*selected).order_by(*order)
    count = 0
    with (
        open_private(path, "xb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as packed,
        io.TextIOWrapper(packed, encoding="utf-8") as out,
    ):
        header = {"table": table.name, "columns": [[c.name, k] for c, k in pairs]}
        out.write(json.dumps(header) + "\n")
        for row in connection.execution_options(yield_per=BATCH).execute(query):
            values = [_encode(k, v) for k, v in zip(kinds, row, strict=True)]
            out.write(json.dumps(values, ensure_ascii=False) + "\n")
            count += 1
    return count


def _copy_blobs(
    blobs: list[tuple[str, str, int]],
    mode: str,
    scratch: Path,
    tar: tarfile.TarFile,
    files: dict[str, str],
    report: BackupReport,
) -> str:
    """Put the blobs in the archive (or note them as kept in the bucket); return the manifest."""
    spool = services.spool()
    lines = ["# sha256\tmd5\tsize\tkept_in"]
    for sha256, md5, size in blobs:
        if mode == "bucket" and not spool.contains(sha256):
            lines.append(f"{sha256}\t{md5}\t{size}\tbucket")
            report.blobs_in_bucket += 1
            continue
        try:
            staged = stage(ChunkReader(services.read_sha256(sha256)), scratch)
        except BlobMissing:
            report.missing.append(sha256)
            lines.append(f"{sha256}\t{md5}\t{size}\tmissing")
            continue
        try:
            if staged.sha256 != sha256 or staged.size != size:
                report.missing.append(sha256)
                lines.append(f"{sha256}\t{md5}\t{size}\tdamaged")
                continue
            _add_file(tar, f"blobs/{sha256[:2]}/{sha256}", staged.path, files, sha256=sha256)
        finally:
            staged.discard()
        lines.append(f"{sha256}\t{md5}\t{size}\tarchive")
        report.blobs_in_archive += 1
        report.bytes_in_archive += size
    return "\n".join(lines) + "\n"


def _secret_entry(app: Flask, tar: tarfile.TarFile, files: dict[str, str]) -> dict[str, Any]:
    """Keep the generated secret key with the data it signs; only name one set by the operator."""
    key = app.config["SECRET_KEY"]
    entry: dict[str, Any] = {"fingerprint": fingerprint(key)}
    if os.environ.get("MERIT_SECRET_KEY"):
        entry["source"] = "environment"
    else:
        entry["source"] = "data folder"
        entry["file"] = "secret_key"
        _add_bytes(tar, "secret_key", key.encode("ascii"), files, mode=0o600)
    return entry


def _describe(store: Any) -> str:
    bucket = getattr(store, "bucket", None)
    if bucket:
        prefix = getattr(store, "prefix", "")
        return f"s3://{bucket}/{prefix}".rstrip("/")
    return f"folder {getattr(store, 'root', '')}"


def _add_file(
    tar: tarfile.TarFile,
    name: str,
    path: Path,
    files: dict[str, str],
    *,
    sha256: str | None = None,
) -> None:
    info = tar.gettarinfo(str(path), arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o600
    if sha256 is None:
        with path.open("rb") as handle:
            sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
    with path.open("rb") as handle:
        tar.addfile(info, handle)
    files[name] = sha256


def _add_bytes(
    tar: tarfile.TarFile, name: str, data: bytes, files: dict[str, str], *, mode: int = 0o600
) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(dt.datetime.now(dt.UTC).timestamp())
    tar.addfile(info, io.BytesIO(data))
    files[name] = hashlib.sha256(data).hexdigest()
