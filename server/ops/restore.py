"""``merit restore``: bring back an archive of ``merit backup``, all of it or nothing.

A restore replaces a whole server (``--force``) or fills an empty one. Whatever goes wrong on
the way (an archive damaged past its database part, rows the database refuses, a store that
refuses a file, a full disk), the server must be left as it was, and the operator told why.
So nothing is changed until everything is checked and staged, and the switch comes last:

1. **Check the archive.** The manifest, then the SHA-256 of every file it lists that the
   restore reads (table files, ``attachments.tsv``, the secret key); every line of
   ``attachments.tsv``.
2. **Check the target.** The database is reachable, this version knows the archive's
   revision, and the database is empty (or ``--force``).
3. **Stage the files** in a private folder of the data folder: the secret key, and every
   attachment of the archive the store does not hold yet, each checked against its SHA-256.
4. **Stage the database**: one transaction migrates it to the archive's revision (if empty),
   empties it, loads every row (triggers off, the ends of foreign-key cycles set last),
   migrates it to this version's newest revision and checks each table's row count against
   the manifest. Nothing is visible to anyone until it commits.
5. **Switch**: the staged attachments go into the store (content-addressed: nothing there is
   replaced), the secret key is renamed over the old one, and the transaction commits. If any
   of these fails, the transaction rolls back, the attachments just added are removed and the
   old key is put back.

The staging folder is removed at the end, whatever happened. Run it with the server stopped:
a server writing meanwhile would see its work replaced.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Connection

from server import db, migrate
from server.files import fsync_directory, private_dir, scratch_dir, write_private
from server.models import Base
from server.ops.backup import FORMAT, FORMAT_VERSION, SEEDED, BackupError, fingerprint
from server.ops.backup import decode_value as _decode
from server.ops.backup import load_type as _load_type
from server.storage import services
from server.storage.base import BlobMissing, StagedFile, StorageError, is_sha256, stage

log = logging.getLogger(__name__)

BATCH = 1000
KEPT_IN = ("archive", "bucket", "missing", "damaged")
UNCHANGED = "nothing was changed"


class NotTakenBack(BackupError):
    """A restore failed at the switch, and part of what it had put could not be taken back."""


@dataclass
class RestoreReport:
    """What a restore put back."""

    rows: dict[str, int] = field(default_factory=dict)
    blobs_restored: int = 0
    blobs_present: int = 0
    missing: list[str] = field(default_factory=list)
    secret_key: str = ""  # what happened to the secret key, for the operator


@dataclass(frozen=True)
class Attachment:
    """One line of ``attachments.tsv``."""

    sha256: str
    size: int
    kept_in: str

    @property
    def member(self) -> str:
        return f"blobs/{self.sha256[:2]}/{self.sha256}"


def restore(
    app: Flask,
    archive: str | Path,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> RestoreReport:
    """Bring back the database, attachments and secret key an archive holds, or nothing.

    Raises :class:`BackupError` saying what is wrong; the server is then as it was.
    """
    try:
        return _restore(app, Path(archive), force=force, say=progress or (lambda _m: None))
    except NotTakenBack:
        raise
    except BackupError as exc:
        raise BackupError(f"{exc}; {UNCHANGED}") from exc
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BackupError(
            f"the archive cannot be read ({exc}): it was cut short or is damaged; {UNCHANGED}"
        ) from exc
    except sa.exc.SQLAlchemyError as exc:
        raise BackupError(
            f"the database refused the restore ({_reason(exc)}); {UNCHANGED}"
        ) from exc
    except StorageError as exc:
        raise BackupError(f"the attachment store failed ({exc}); {UNCHANGED}") from exc
    except OSError as exc:
        raise BackupError(
            f"{exc.filename or 'a file'}: {exc.strerror or exc}; {UNCHANGED}"
        ) from exc
    except (KeyError, TypeError, ValueError) as exc:
        # Past the checks of the manifest, these mean an archive this version cannot read.
        raise BackupError(
            f"the archive does not hold what this version reads ({type(exc).__name__}: {exc}); "
            f"{UNCHANGED}"
        ) from exc


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def _restore(
    app: Flask, archive: Path, *, force: bool, say: Callable[[str], None]
) -> RestoreReport:
    report = RestoreReport()
    with tarfile.open(archive, "r:") as tar:
        manifest = read_manifest(tar)
        attachments = _check_archive(tar, manifest)
        empty = _check_target(app, manifest["database"]["revision"], force=force)
        data_dir = private_dir(app.config["DATA_DIR"])
        with scratch_dir(data_dir, ".restore-") as staging:
            report.secret_key, key = _stage_secret(app, tar, manifest, staging)
            blobs = _stage_blobs(tar, manifest, attachments, staging, report, say)
            switch = _Switch(Path(app.config["DATA_DIR"]) / "secret_key")
            with db.database().engine.connect() as connection:
                transaction = connection.begin()
                try:
                    _build_database(app, connection, tar, manifest, report, say, empty=empty)
                    switch.put_blobs(blobs, report)
                    switch.secret_key(key)
                    transaction.commit()
                    switch.done()
                except BaseException as exc:
                    if transaction.is_active:
                        transaction.rollback()
                    left = switch.undo()
                    if left:
                        raise NotTakenBack(
                            f"the restore failed ({exc}) and could not take back: "
                            + "; ".join(left)
                        ) from exc
                    raise
    say(
        f"attachments: {report.blobs_restored} restored, {report.blobs_present} already in the "
        f"store, {len(report.missing)} missing"
    )
    return report


# ---- 1. the archive -----------------------------------------------------------------------------


def read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    """Return an archive's manifest, refusing what is not a complete merit backup."""
    try:
        member = tar.getmember("manifest.json")
    except KeyError:
        raise BackupError(
            "this archive has no manifest.json: it is not a merit backup, or it was cut short"
        ) from None
    try:
        manifest = json.load(tar.extractfile(member))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"manifest.json is damaged (not JSON: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError("this archive is not a merit backup")
    version = manifest.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BackupError(
            f"this archive has format {version!r}; this version of merit-collect reads up to "
            f"{FORMAT_VERSION}: restore with a newer one"
        )
    database = manifest.get("database")
    shaped = (
        isinstance(manifest.get("files"), dict)
        and isinstance(database, dict)
        and isinstance(database.get("revision"), str)
        and isinstance(database.get("tables"), dict)
        and all(
            isinstance(facts, dict) and isinstance(facts.get("file"), str)
            for facts in database["tables"].values()
        )
        and isinstance(manifest.get("secret_key", {}), dict)
    )
    if not shaped:
        raise BackupError("manifest.json is damaged (files, database or tables missing)")
    unknown = set(database["tables"]) - set(Base.metadata.tables)
    if unknown:
        raise BackupError(
            f"the archive has tables this version does not know ({', '.join(sorted(unknown))}): "
            "restore with the version that made it (or a newer one)"
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
    if handle is None:
        raise BackupError(f"{name} is not a file in the archive")
    with handle:
        if hashlib.file_digest(handle, "sha256").hexdigest() != expected:
            raise BackupError(f"{name} is damaged (its SHA-256 differs from the manifest)")
    return tar.extractfile(member)


def _check_archive(tar: tarfile.TarFile, manifest: dict[str, Any]) -> list[Attachment]:
    """Check every file the restore reads against the manifest; return the attachments."""
    for facts in manifest["database"]["tables"].values():
        _verified(tar, facts["file"], manifest).close()
    secret = manifest.get("secret_key", {})
    if "file" in secret:
        _verified(tar, secret["file"], manifest).close()
    with _verified(tar, "attachments.tsv", manifest) as handle:
        return _attachment_entries(handle)


def _attachment_entries(handle: IO[bytes]) -> list[Attachment]:
    found = []
    for number, line in enumerate(io.TextIOWrapper(handle, encoding="utf-8"), start=1):
        if line.startswith("#") or not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        if (
            len(fields) != 4
            or not is_sha256(fields[0])
            or not fields[2].isdigit()
            or fields[3] not in KEPT_IN
        ):
            raise BackupError(f"attachments.tsv line {number} is damaged: {line.strip()[:120]!r}")
        found.append(Attachment(fields[0], int(fields[2]), fields[3]))
    return found


# ---- 2. the target ------------------------------------------------------------------------------


def _check_target(app: Flask, revision: str, *, force: bool) -> bool:
    """Refuse a target the archive cannot go into; return whether its database is empty."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    url = app.config["DATABASE_URL"]
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
    try:
        with engine.connect() as connection:
            current = migrate.current_revision(connection)
            if current is None:
                return True
            inspector = sa.inspect(connection)
            holding = [
                table.name
                for table in Base.metadata.sorted_tables
                if table.name not in SEEDED
                and inspector.has_table(table.name)
                and connection.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first()
            ]
    except sa.exc.OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise BackupError(f"the database cannot be reached ({where}): {_reason(exc)}") from exc
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
    return False


# ---- 3. the files -------------------------------------------------------------------------------


def _stage_secret(
    app: Flask, tar: tarfile.TarFile, manifest: dict[str, Any], staging: Path
) -> tuple[str, Path | None]:
    """Stage the archive's generated secret key; return what to tell and the staged file.

    No file when ``MERIT_SECRET_KEY`` is set here, or was when the archive was made.
    """
    entry = manifest.get("secret_key", {})
    expected = entry.get("fingerprint")
    if os.environ.get("MERIT_SECRET_KEY"):
        if fingerprint(app.config["SECRET_KEY"]) == expected:
            return "MERIT_SECRET_KEY is the one the archive was made with", None
        return (
            "WARNING: MERIT_SECRET_KEY differs from the one the archive was made with: app-user "
            "QR codes cannot be shown again and pseudonyms in exports will change; set it back "
            "to the old key"
        ), None
    if "file" not in entry:
        return (
            "WARNING: the archive was made with MERIT_SECRET_KEY set in the environment; set the "
            "same key here"
        ), None
    key = _verified(tar, entry["file"], manifest).read()
    path = Path(app.config["DATA_DIR"]) / "secret_key"
    return f"secret key restored to {path}", write_private(staging / "secret_key", key)


def _stage_blobs(
    tar: tarfile.TarFile,
    manifest: dict[str, Any],
    attachments: list[Attachment],
    staging: Path,
    report: RestoreReport,
    say: Callable[[str], None],
) -> list[StagedFile]:
    """Copy out every attachment the store lacks, each checked; note those nowhere to be had."""
    store = services.store()
    folder = private_dir(staging / "blobs")
    staged: list[StagedFile] = []
    for attachment in attachments:
        try:
            if store.size(attachment.sha256) == attachment.size:
                report.blobs_present += 1
                continue
        except BlobMissing:
            pass
        except StorageError as exc:
            raise BackupError(f"the attachment store cannot be reached: {exc}") from exc
        if attachment.kept_in != "archive":
            report.missing.append(attachment.sha256)
            continue
        name = attachment.member
        try:
            member = tar.getmember(name)
        except KeyError:
            raise BackupError(f"{name} is missing from the archive") from None
        source = tar.extractfile(member)
        if source is None:
            raise BackupError(f"{name} is not a file in the archive")
        copy = stage(source, folder)
        listed = manifest["files"].get(name, attachment.sha256)
        if (
            copy.sha256 != attachment.sha256
            or copy.size != attachment.size
            or listed != copy.sha256
        ):
            copy.discard()
            raise BackupError(f"{name} is damaged (its SHA-256 differs from its name)")
        staged.append(copy)
    say(f"attachments: {len(staged)} staged, {report.blobs_present} already in the store")
    return staged


# ---- 4. the database ----------------------------------------------------------------------------


def _build_database(
    app: Flask,
    connection: Connection,
    tar: tarfile.TarFile,
    manifest: dict[str, Any],
    report: RestoreReport,
    say: Callable[[str], None],
    *,
    empty: bool,
) -> None:
    """In the caller's transaction: migrate, load, migrate to the newest, check the counts."""
    url = app.config["DATABASE_URL"]
    revision = manifest["database"]["revision"]
    if empty:
        migrate.upgrade(url, revision, connection=connection)
        say(f"empty database migrated to the archive's revision {revision}")
    tables = manifest["database"]["tables"]
    _load_database(connection, tar, manifest, report, say)
    migrate.upgrade(url, connection=connection)
    say("database migrated to this version's newest revision")
    for name, facts in tables.items():
        expected = facts.get("rows")
        if expected is not None and report.rows.get(name) != expected:
            raise BackupError(
                f"{facts['file']} holds {report.rows.get(name)} rows, the manifest says {expected}"
            )
    if connection.dialect.name == "postgresql":
        _move_sequences(connection, list(tables))


def _load_database(
    connection: Connection,
    tar: tarfile.TarFile,
    manifest: dict[str, Any],
    report: RestoreReport,
    say: Callable[[str], None],
) -> None:
    """Load every table's rows, triggers off, cycles closed at the end."""
    tables = manifest["database"]["tables"]
    deferred: dict[str, list[str]] = manifest["database"].get("deferred", {})
    if connection.dialect.name == "sqlite":
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
    """Move each id sequence past the restored ids (explicit ids do not advance them).

    ``setval`` is not undone by a rollback: a sequence is never moved back, so that if the
    restore fails after this, the old rows' next ids are still free.
    """
    for name in names:
        for column in Base.metadata.tables[name].primary_key.columns:
            if not (column.autoincrement is True or column.autoincrement == "auto"):
                continue
            if not isinstance(column.type, sa.Integer):
                continue
            sequence = connection.execute(
                sa.text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": name, "column": column.name},
            ).scalar()
            if sequence is None:
                continue
            highest = connection.execute(
                sa.text(f'SELECT MAX("{column.name}") FROM "{name}"')  # noqa: S608 - our names
            ).scalar()
            last, called = connection.execute(
                sa.text(f"SELECT last_value, is_called FROM {sequence}")  # noqa: S608
            ).one()
            used = max(highest or 0, last if called else 0)
            if used:
                connection.execute(sa.text("SELECT setval(:s, :v)"), {"s": sequence, "v": used})


# ---- 5. the switch ------------------------------------------------------------------------------


class _Switch:
    """Put the staged files in place, remembering how to take each back."""

    def __init__(self, key_path: Path) -> None:
        self.key_path = key_path
        # Beside the key, not in the staging folder: if it cannot be put back, it is still there.
        self.old_key = key_path.with_name(".secret_key.before-restore")
        self.key_replaced = False
        self.added: list[str] = []

    def put_blobs(self, staged: list[StagedFile], report: RestoreReport) -> None:
        """Put every staged attachment into the store (after checking it is not there yet)."""
        store = services.store()
        for copy in staged:
            try:
                if store.size(copy.sha256) == copy.size:
                    report.blobs_present += 1
                    continue
            except BlobMissing:
                pass
            try:
                store.put(copy)
            except StorageError as exc:
                raise BackupError(f"the store refused {copy.sha256}: {exc}") from exc
            self.added.append(copy.sha256)
            report.blobs_restored += 1

    def secret_key(self, staged: Path | None) -> None:
        """Rename the staged key over the old one, keeping the old one to put back."""
        if staged is None:
            return
        private_dir(self.key_path.parent)
        self.old_key.unlink(missing_ok=True)
        if self.key_path.exists():
            os.link(self.key_path, self.old_key)
        os.replace(staged, self.key_path)
        self.key_replaced = True
        fsync_directory(self.key_path.parent)

    def done(self) -> None:
        """Forget the old key once the restore has committed."""
        self.old_key.unlink(missing_ok=True)

    def undo(self) -> list[str]:
        """Take back what was put (the attachments added, the key replaced); say what was not."""
        left = []
        if self.key_replaced:
            try:
                if self.old_key.exists():
                    os.replace(self.old_key, self.key_path)
                else:
                    self.key_path.unlink(missing_ok=True)
                fsync_directory(self.key_path.parent)
            except OSError as exc:
                left.append(f"the old secret key, kept in {self.old_key} ({exc})")
        store = services.store()
        for sha256 in self.added:
            try:
                store.delete(sha256)
            except StorageError as exc:
                left.append(f"attachment {sha256} added to the store ({exc})")
        for problem in left:
            log.error("restore failed and could not take back %s", problem)
        return left
