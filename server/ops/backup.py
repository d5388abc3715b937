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

``merit restore`` migrates an empty database to the archive's revision, loads every row (the
triggers that would recompute some columns off meanwhile, PostgreSQL's id sequences moved past
the restored ids afterwards), migrates to this version's newest revision, and puts the blobs
back into the configured store, each checked against its SHA-256. ``merit storage verify``
then passes. ``manifest.json`` is written last: an archive cut short has none and is refused.
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
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

import server
from server import db, migrate
from server.db import UTCDateTime
from server.models import Base
from server.storage import service
from server.storage.base import BlobMissing, StorageError, stage
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


@dataclass
class RestoreReport:
    """What a restore put back."""

    rows: dict[str, int] = field(default_factory=dict)
    blobs_restored: int = 0
    blobs_present: int = 0
    missing: list[str] = field(default_factory=list)
    secret_key: str = ""  # what happened to the secret key, for the operator


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


def _decode(kind: str, value: Any) -> Any:
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


def _load_type(kind: str) -> Any:
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
    target: str | Path,
    *,
    attachments: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> BackupReport:
    """Write an archive of the database and the attachments to ``target``; return a report.

    ``attachments``: ``archive`` copies every blob into the archive, ``bucket`` leaves them in
    the S3 bucket (except those still in the spool), ``auto`` is ``bucket`` for S3 and
    ``archive`` for a local folder.
    """
    say = progress or (lambda _message: None)
    path = archive_path(target)
    database = db.database()
    store = service.store()
    if attachments == "auto":
        attachments = "bucket" if getattr(store, "bucket", None) else "archive"
    if attachments not in ("archive", "bucket"):
        raise BackupError(f"--attachments must be auto, archive or bucket, not {attachments!r}")
    if attachments == "bucket" and not getattr(store, "bucket", None):
        raise BackupError("--attachments bucket needs an S3 store; this one is a local folder")

    report = BackupReport(path)
    partial = path.with_name(path.name + ".partial")
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="merit-backup-", dir=path.parent) as scratch:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            tables, blobs, revision = _dump_database(
                database, Path(scratch), tar, files, report, say
            )
            say(f"attachments: {len(blobs)} blobs ({attachments})")
            manifest_lines = _copy_blobs(blobs, attachments, Path(scratch), tar, files, report)
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
        with partial.open("rb+") as handle:
            os.fsync(handle.fileno())
    os.replace(partial, path)
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
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as out:
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
    spool = service.spool()
    lines = ["# sha256\tmd5\tsize\tkept_in"]
    for sha256, md5, size in blobs:
        if mode == "bucket" and not spool.contains(sha256):
            lines.append(f"{sha256}\t{md5}\t{size}\tbucket")
            report.blobs_in_bucket += 1
            continue
        try:
            staged = stage(ChunkReader(service.read_sha256(sha256)), scratch)
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


# ---- restore ------------------------------------------------------------------------------------


def read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    """Return an archive's manifest, refusing what is not a complete merit backup."""
    try:
        member = tar.getmember("manifest.json")
    except KeyError:
        raise BackupError(
            "this archive has no manifest.json: it is not a merit backup, or it was cut short"
        ) from None
    manifest = json.load(tar.extractfile(member))
    if manifest.get("format") != FORMAT:
        raise BackupError("this archive is not a merit backup")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise BackupError(
            f"this archive has format {manifest['format_version']}; this version of "
            f"merit-collect reads up to {FORMAT_VERSION}: restore with a newer one"
        )
    return manifest


def _verified(tar: tarfile.TarFile, name: str, manifest: dict[str, Any]) -> IO[bytes]:
    """Open an archive member, after checking its SHA-256 against the manifest."""
    expected = manifest["files"].get(name)
    if expected is None:
        raise BackupError(f"{name} is not listed in the manifest")
    try:
        member = tar.getmember(name)
    except KeyError:
        raise BackupError(f"{name} is missing from the archive") from None
    handle = tar.extractfile(member)
    if hashlib.file_digest(handle, "sha256").hexdigest() != expected:
        raise BackupError(f"{name} is damaged (its SHA-256 differs from the manifest)")
    return tar.extractfile(member)


def restore(
    app: Flask,
    archive: str | Path,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> RestoreReport:
    """Bring back the database and attachments an archive holds; return what was done."""
    try:
        return _restore(app, archive, force=force, progress=progress)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BackupError(
            f"the archive cannot be read ({exc}): it was cut short or is damaged"
        ) from exc


def _restore(
    app: Flask,
    archive: str | Path,
    *,
    force: bool,
    progress: Callable[[str], None] | None,
) -> RestoreReport:
    say = progress or (lambda _message: None)
    report = RestoreReport()
    with tarfile.open(archive, "r:") as tar:
        manifest = read_manifest(tar)
        # Every database file is checked before anything is written.
        for facts in manifest["database"]["tables"].values():
            _verified(tar, facts["file"], manifest).close()
        revision = manifest["database"]["revision"]
        _prepare_database(app, revision, force=force, say=say)
        _load_database(tar, manifest, report, say)
        migrate.upgrade(app.config["DATABASE_URL"])
        say("database migrated to this version's newest revision")
        _restore_blobs(tar, manifest, report, say)
        report.secret_key = _restore_secret(app, tar, manifest)
    return report


def _prepare_database(
    app: Flask, revision: str, *, force: bool, say: Callable[[str], None]
) -> None:
    """Make the target database empty and at the archive's revision, or refuse."""
    url = app.config["DATABASE_URL"]
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        known = ScriptDirectory.from_config(migrate.alembic_config(url)).get_revision(revision)
    except CommandError:
        known = None
    if known is None:
        raise BackupError(
            f"the archive's database revision {revision} is unknown to this version of "
            "merit-collect: restore with the version that made it (or a newer one)"
        )
    engine = db.database().engine
    with engine.connect() as connection:
        current = migrate.current_revision(connection)
    if current is None:
        migrate.upgrade(url, revision)
        say(f"empty database migrated to the archive's revision {revision}")
        return
    with engine.connect() as connection:
        holding = [
            table.name
            for table in Base.metadata.sorted_tables
            if table.name not in SEEDED
            and sa.inspect(connection).has_table(table.name)
            and connection.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first()
        ]
    if holding and not force:
        raise BackupError(
            "the database already holds data (" + ", ".join(holding[:5]) + "): restore into "
            "an empty database, or add --force to replace everything in it"
        )
    if current != revision:
        raise BackupError(
            f"the database is at revision {current}, the archive at {revision}: restore into "
            "an empty database (drop and create it), which is migrated to the archive's first"
        )


def _load_database(
    tar: tarfile.TarFile,
    manifest: dict[str, Any],
    report: RestoreReport,
    say: Callable[[str], None],
) -> None:
    """Load every table's rows in one transaction, triggers off, cycles closed at the end."""
    engine = db.database().engine
    dialect = engine.dialect.name
    tables = manifest["database"]["tables"]
    deferred: dict[str, list[str]] = manifest["database"].get("deferred", {})
    with engine.begin() as connection:
        if dialect == "sqlite":
            connection.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        triggers = _triggers_off(connection, list(tables))
        _empty(connection, list(tables), deferred)
        pending: list[tuple[str, list[str], list[dict[str, Any]]]] = []
        for name, facts in tables.items():
            columns = deferred.get(name, [])
            later: list[dict[str, Any]] = []
            with gzip.open(_verified(tar, facts["file"], manifest), "rt", encoding="utf-8") as rows:
                count = _load_table(connection, name, rows, columns, later)
            if later:
                pending.append((name, columns, later))
            report.rows[name] = count
            say(f"  {name}: {count} rows")
        for name, columns, later in pending:
            # Close the cycles: these columns point at rows of tables loaded after theirs.
            key = next(iter(Base.metadata.tables[name].primary_key.columns)).name
            table = sa.table(name, *(sa.column(c) for c in [key, *columns]))
            connection.execute(
                table.update()
                .where(table.c[key] == sa.bindparam("k_"))
                .values({c: sa.bindparam(f"v_{c}") for c in columns}),
                later,
            )
        _triggers_on(connection, triggers)
        if dialect == "postgresql":
            _move_sequences(connection, list(tables))


def _load_table(
    connection: Connection,
    name: str,
    rows: IO[str],
    deferred: list[str],
    later: list[dict[str, Any]],
) -> int:
    """Insert a table's rows in batches; hold back the deferred columns' values in ``later``."""
    header = json.loads(rows.readline())
    columns: list[tuple[str, str]] = [tuple(c) for c in header["columns"]]
    table = sa.table(name, *(sa.column(c, _load_type(k)) for c, k in columns))
    key = next(iter(Base.metadata.tables[name].primary_key.columns)).name if deferred else ""
    batch: list[dict[str, Any]] = []
    count = 0
    for line in rows:
        values = {c: _decode(k, v) for (c, k), v in zip(columns, json.loads(line), strict=True)}
        if deferred and any(values.get(c) is not None for c in deferred):
            later.append({"k_": values[key], **{f"v_{c}": values[c] for c in deferred}})
            for column in deferred:
                values[column] = None
        batch.append(values)
        count += 1
        if len(batch) >= BATCH:
            connection.execute(table.insert(), batch)
            batch = []
    if batch:
        connection.execute(table.insert(), batch)
    return count


def _empty(connection: Connection, names: list[str], deferred: dict[str, list[str]]) -> None:
    """Remove every row of the tables to load (the seeded roles, or everything with --force)."""
    inspector = sa.inspect(connection)
    present = [n for n in names if inspector.has_table(n)]
    for name, columns in deferred.items():
        if name in present:
            table = sa.table(name, *(sa.column(c) for c in columns))
            connection.execute(table.update().values({c: None for c in columns}))
    for name in reversed(present):
        connection.execute(sa.table(name).delete())


def _triggers_off(connection: Connection, names: list[str]) -> list[tuple[str, str]]:
    """Turn off triggers (they would recompute restored columns); return how to turn them on."""
    if connection.dialect.name == "postgresql":
        for name in names:
            connection.exec_driver_sql(f'ALTER TABLE "{name}" DISABLE TRIGGER USER')
        return [(name, "") for name in names]
    saved = [
        (row.name, row.sql)
        for row in connection.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
        )
    ]
    for name, _sql in saved:
        connection.exec_driver_sql(f'DROP TRIGGER "{name}"')
    return saved


def _triggers_on(connection: Connection, saved: list[tuple[str, str]]) -> None:
    if connection.dialect.name == "postgresql":
        for name, _ in saved:
            connection.exec_driver_sql(f'ALTER TABLE "{name}" ENABLE TRIGGER USER')
        return
    for _name, sql in saved:
        connection.exec_driver_sql(sql)


def _move_sequences(connection: Connection, names: list[str]) -> None:
    """Move each id sequence past the restored ids (explicit ids do not advance them)."""
    for name in names:
        for column in Base.metadata.tables[name].primary_key.columns:
            if not (column.autoincrement is True or column.autoincrement == "auto"):
                continue
            if not isinstance(column.type, sa.Integer):
                continue
            connection.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence(:table, :column), "  # noqa: S608
                    f'COALESCE(MAX("{column.name}"), 1), MAX("{column.name}") IS NOT NULL) '
                    f'FROM "{name}"'
                ),
                {"table": name, "column": column.name},
            )


def _restore_blobs(
    tar: tarfile.TarFile,
    manifest: dict[str, Any],
    report: RestoreReport,
    say: Callable[[str], None],
) -> None:
    """Put the archive's blobs into the configured store; check those left in the bucket."""
    store = service.store()
    entries = _attachment_entries(_verified(tar, "attachments.tsv", manifest))
    with tempfile.TemporaryDirectory(prefix="merit-restore-") as scratch:
        for sha256, _md5, size, kept_in in entries:
            try:
                if store.size(sha256) == size:
                    report.blobs_present += 1
                    continue
            except BlobMissing:
                pass
            except StorageError as exc:
                raise BackupError(f"the attachment store cannot be reached: {exc}") from exc
            if kept_in != "archive":
                report.missing.append(sha256)
                continue
            name = f"blobs/{sha256[:2]}/{sha256}"
            member = tar.extractfile(tar.getmember(name))
            staged = stage(member, Path(scratch))
            try:
                if staged.sha256 != sha256 or staged.size != size:
                    raise BackupError(f"{name} is damaged (its SHA-256 differs from its name)")
                try:
                    store.put(staged)
                except StorageError as exc:
                    raise BackupError(f"the store refused {sha256}: {exc}") from exc
            finally:
                staged.discard()
            report.blobs_restored += 1
    say(
        f"attachments: {report.blobs_restored} restored, {report.blobs_present} already in the "
        f"store, {len(report.missing)} missing"
    )


def _attachment_entries(handle: IO[bytes]) -> Iterator[tuple[str, str, int, str]]:
    for line in io.TextIOWrapper(handle, encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        sha256, md5, size, kept_in = line.rstrip("\n").split("\t")
        yield sha256, md5, int(size), kept_in


def _restore_secret(app: Flask, tar: tarfile.TarFile, manifest: dict[str, Any]) -> str:
    """Put back the generated secret key, or say whether the operator's matches the archive's."""
    entry = manifest.get("secret_key", {})
    expected = entry.get("fingerprint")
    if os.environ.get("MERIT_SECRET_KEY"):
        if fingerprint(app.config["SECRET_KEY"]) == expected:
            return "MERIT_SECRET_KEY is the one the archive was made with"
        return (
            "WARNING: MERIT_SECRET_KEY differs from the one the archive was made with: app-user "
            "QR codes cannot be shown again and pseudonyms in exports will change; set it back "
            "to the old key"
        )
    if "file" not in entry:
        return (
            "WARNING: the archive was made with MERIT_SECRET_KEY set in the environment; set the "
            "same key here"
        )
    key = _verified(tar, entry["file"], manifest).read()
    path = Path(app.config["DATA_DIR"]) / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(".secret_key.restore")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    return f"secret key restored to {path}"
