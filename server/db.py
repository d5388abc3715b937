"""Database plumbing: the declarative Base, column types shared by every model, engines, sessions.

SQLite (embedded default) and PostgreSQL (production) must behave the same. Two things differ
underneath and are evened out here:

* time: SQLite keeps no time zone, so :class:`UTCDateTime` stores UTC and gives back aware values;
* locking: SQLite has one writer at a time. Sessions of requests that change data (POST, PUT,
  PATCH, DELETE) and of commands start with ``BEGIN IMMEDIATE``, so that two writers queue
  (``busy_timeout``) instead of failing with "database is locked" when both try to upgrade a
  read lock. Sessions of GET requests and exports keep a deferred ``BEGIN`` and, in WAL mode,
  never block writers (fifty tablets listing forms do not wait for one upload).

Services receive a :class:`~sqlalchemy.orm.Session` as their first argument; views get the
request's session from :func:`session`. Services that change data commit themselves, at the point
where their change must be durable ("(commits)" in their docstrings); views never commit
(tests/unit/test_layering.py). A service that leaves its change open, because larger changes
are made of it, is given a committing form with :func:`committing` for callers that make that
change alone. (Not one commit per request: a view that caught a problem and answered without
rolling back would then commit half a change.)
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from flask import Flask, current_app, g
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from server import files

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base class of every model."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always returned time-zone aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# JSON documents: JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
JSONDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# Identifiers of the tables that grow with every record: 64-bit on PostgreSQL. SQLite only
# auto-increments a column declared exactly INTEGER PRIMARY KEY, hence the variant.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def utcnow() -> dt.datetime:
    """Return the current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def create_engine(url: str, *, readonly: bool = False, **kwargs: Any) -> Engine:
    """Create an engine with the settings this server relies on for the given database."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        _private_database_file(url)
        engine = sa.create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            **kwargs,
        )
        _prepare_sqlite(engine, immediate=not readonly)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:
        # One worker serves up to MERIT_THREADS requests at once; most hold a connection
        # only briefly (uploads are read before the transaction starts).
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 30)
    return sa.create_engine(url, **kwargs)


def _private_database_file(url: str) -> None:
    """Create the SQLite file 0600 before SQLite does (it would make it 0644).

    SQLite gives its journal, WAL and shared-memory files the database file's mode.
    """
    path = files.sqlite_path(url)
    if path is None:
        return
    if not path.parent.exists():
        files.private_dir(path.parent)
    files.ensure_private(path)


def _prepare_sqlite(engine: Engine, *, immediate: bool) -> None:
    """Turn on WAL, foreign keys and a busy timeout; make writers take the lock at BEGIN."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """The engines and session factories of one application."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        # Exports read in a long transaction: on SQLite it must not hold the write lock.
        self.read_engine = create_engine(url, readonly=True) if self.is_sqlite else self.engine
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessionmaker = sessionmaker(self.read_engine, expire_on_commit=False)

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """Open a session outside a request (CLI, background jobs); roll back what is left."""
        maker = self.read_sessionmaker if readonly else self.sessionmaker
        with maker() as db_session:
            try:
                yield db_session
            finally:
                db_session.rollback()

    def dispose(self) -> None:
        """Close every pooled connection (after fork, at shutdown, in tests)."""
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


def init_app(app: Flask) -> Database:
    """Attach a :class:`Database` to the app and close each request's session at teardown."""
    database = Database(app.config["DATABASE_URL"])
    app.extensions["merit.db"] = database

    def _close_session(_exc: BaseException | None) -> None:
        for name in ("_merit_session", "_merit_read_session"):
            db_session = g.pop(name, None)
            if db_session is not None:
                db_session.rollback()
                db_session.close()

    # At the end of each request, and of each application context (commands, jobs): a
    # request served inside a context someone else holds must still release its session.
    app.teardown_request(_close_session)
    app.teardown_appcontext(_close_session)

    return database


def database() -> Database:
    """Return the current application's :class:`Database`."""
    return current_app.extensions["merit.db"]


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session() -> Session:
    """Return the session of the current request (or app context), opening it on first use.

    On SQLite, a GET request's session reads without taking the write lock; a request that
    changes data takes it at its first statement.
    """
    db_session = g.get("_merit_session")
    if db_session is None:
        from flask import has_request_context, request

        reading = has_request_context() and request.method in SAFE_METHODS
        maker = database().read_sessionmaker if reading else database().sessionmaker
        db_session = maker()
        g._merit_session = db_session
    return db_session


def end_transaction() -> None:
    """End the current request's transaction, if one is open; the session stays usable.

    What was not committed is rolled back, and the next statement begins a new transaction.
    Called before a request waits on the network (:mod:`server.ops.buffering`): until then it
    would hold, on SQLite, the single write lock a request that changes data takes at its first
    statement, and on PostgreSQL a connection of the pool.
    """
    db_session = g.get("_merit_session")
    if db_session is not None and db_session.in_transaction():
        db_session.rollback()


P = ParamSpec("P")
T = TypeVar("T")


def committing(
    change: Callable[Concatenate[Session, P], T],
) -> Callable[Concatenate[Session, P], T]:
    """Return the committing form of a service that leaves its change open: the same call,
    then its session committed."""

    @functools.wraps(change)
    def durable(db_session: Session, /, *args: P.args, **kwargs: P.kwargs) -> T:
        result = change(db_session, *args, **kwargs)
        db_session.commit()
        return result

    durable.__doc__ = (
        f"Commit what :func:`{change.__module__}.{change.__qualname__}` does, which is:\n\n"
        f"{change.__doc__ or ''}"
    )
    return durable


def read_session() -> Session:
    """Return a read-only session for long reads (exports) that must not block writers."""
    db_session = g.get("_merit_read_session")
    if db_session is None:
        db_session = database().read_sessionmaker()
        g._merit_read_session = db_session
    return db_session


def insert_or_ignore(
    db_session: Session, table: sa.Table, values: dict[str, Any], conflict: list[str]
) -> bool:
    """Insert a row unless one with the same ``conflict`` columns exists (race-safe).

    Return whether the row was inserted.
    """
    dialect = db_session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = (
        insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=conflict)
        .returning(*(table.c[name] for name in conflict))
    )
    # RETURNING, not rowcount: psycopg leaves rowcount at -1 for this statement.
    return db_session.execute(statement).first() is not None


def delete_batch(db_session: Session, table: sa.Table, *conditions: Any, limit: int) -> int:
    """Delete at most ``limit`` rows of ``table`` matching ``conditions``; return how many.

    For housekeeping done on the way (expired sessions, old Digest nonces): bounded, so that
    the request doing it stays short, and on PostgreSQL rows that another transaction is
    deleting are skipped (SKIP LOCKED), so that two purges never wait for each other or
    deadlock. Not committed.
    """
    [key] = table.primary_key.columns
    chosen = sa.select(key).where(*conditions).limit(limit).with_for_update(skip_locked=True)
    return db_session.execute(sa.delete(table).where(key.in_(chosen))).rowcount or 0
