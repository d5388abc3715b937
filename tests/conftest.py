"""Fixtures shared by the whole suite.

Every test that uses ``app`` (or ``client``, ``db_session``...) runs twice: on SQLite and on
PostgreSQL. When PostgreSQL is unreachable the PostgreSQL half is skipped with the reason,
except under ``CI=true``, where it fails: CI must prove both databases.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest
from argon2 import PasswordHasher
from flask import Flask
from werkzeug.routing import Rule

from server import db
from server.app import create_app
from server.auth import passwords
from tests.support import databases

IN_CI = os.environ.get("CI", "").lower() == "true"
SHARED = Path(__file__).resolve().parents[2] / "shared"


# Two costs every test would otherwise pay, which say nothing about the server:
#
# * argon2id at the library's recommended parameters costs about 0.1 s of CPU per hash and per
#   check, by design; tests create users and sign in by the thousand. In this process it runs
#   with its cheapest parameters (still argon2id: hashes, checks and rehash-on-login behave the
#   same). Servers the tests start as processes (``merit serve``) keep the real parameters, and
#   tests/unit/test_passwords.py checks that the server's are the recommended ones.
# * Flask compiles every URL rule for every application (werkzeug parses it with regular
#   expressions and builds a URL builder function with ast and compile()): about 0.2 s for
#   each of the thousands of applications the tests create. What a rule compiles to depends
#   only on its text, defaults and the map's settings and converters, so it is compiled once
#   per process and the result is shared (the converters too: werkzeug's own keep nothing of
#   their map). Jinja's compiled templates are shared the same way, through its bytecode
#   cache (which checks them against the source).
REAL_PASSWORD_HASHER = passwords._hasher
passwords._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

_werkzeug_compile = Rule.compile
_compiled: dict = {}


def _compile_once(self: Rule) -> None:
    key = (
        self.rule,
        self.subdomain,
        self.host,
        self.merge_slashes,
        self.map.host_matching,
        repr(sorted((self.defaults or {}).items())),
        tuple(sorted((name, id(kind)) for name, kind in self.map.converters.items())),
    )
    done = _compiled.get(key)
    if done is None:
        _werkzeug_compile(self)
        _compiled[key] = (
            self._parts,
            self._trace,
            self._converters,
            set(self.arguments),
            self._build.__func__,
            self._build_unknown.__func__,
        )
        return
    parts, trace, converters, arguments, build, build_unknown = done
    self._parts, self._trace, self._converters = list(parts), list(trace), dict(converters)
    self.arguments = set(arguments)
    self._build = build.__get__(self, None)
    self._build_unknown = build_unknown.__get__(self, None)


Rule.compile = _compile_once  # type: ignore[method-assign]


class _SharedTemplateCode(jinja2.BytecodeCache):
    """Compiled templates kept in memory for every application of this process."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


Flask.jinja_options = {**Flask.jinja_options, "bytecode_cache": _SharedTemplateCode()}


def _worker(config: pytest.Config) -> str:
    return getattr(config, "workerinput", {}).get("workerid", "main")


@pytest.fixture(scope="session")
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated PostgreSQL database for this test process."""
    ok, reason = databases.pg_available()
    if not ok:
        message = f"PostgreSQL unreachable at {databases.pg_admin_url()}: {reason}"
        if IN_CI:
            pytest.fail(message + " (CI=true: PostgreSQL tests may not be skipped)")
        pytest.skip(message)
    url = databases.create_pg_database(_worker(request.config))
    yield url
    databases.drop_pg_database(url)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite database file for this test process."""
    return databases.create_sqlite_database(tmp_path_factory.mktemp("sqlite"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of an empty, migrated database; each test runs once per database."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    databases.reset(url)
    yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A database emptied once for a whole test module (for tests sharing one real server).

    Tests using it must not depend on each other's rows.
    """
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    databases.reset(url)
    yield url


def make_app(database_url: str, tmp_path: Path, **overrides) -> Flask:
    """Build an application on the given database, with its files under ``tmp_path``."""
    settings = {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path / "var"),
        "STORAGE_URL": str(tmp_path / "blobs"),
        "SECRET_KEY": "test-secret-key-not-for-production",
        "ODK_VALIDATE": False,
        "FORMS_DIR": str(tmp_path / "no-forms"),
    }
    settings.update(overrides)
    return create_app(settings)


@pytest.fixture
def app_overrides() -> dict:
    """Settings a test module wants changed (override this fixture)."""
    return {}


@pytest.fixture
def app(database_url: str, tmp_path: Path, app_overrides: dict) -> Iterator[Flask]:
    """The application on an empty database (SQLite, then PostgreSQL)."""
    application = make_app(database_url, tmp_path, **app_overrides)
    yield application
    application.extensions["merit.db"].dispose()


@pytest.fixture(autouse=True)
def _push_request_context():
    """Replace pytest-flask's fixture that keeps one request context open for the whole test.

    With it, every request a test makes would share one application context and one ``g``
    (Flask reuses an active context): state such as the signed-in actor could leak from one
    request to the next and hide real bugs. Each request must start clean, as in production.
    """
    yield


@pytest.fixture
def db_session(app: Flask):
    """A session on the test database, outside any request (inside an application context).

    On SQLite it reads without taking the write lock, so that requests the test makes are not
    blocked by the test's own open transaction; it writes when told to commit.
    """
    with app.app_context(), db.database().session(readonly=True) as db_session:
        yield db_session


@pytest.fixture
def shared_dir() -> Path:
    """The shared folder beside the checkout (docs, corpus, data); skipped when absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: these tests need the shared corpus beside the checkout")
    return SHARED


@pytest.fixture
def bare_app(tmp_path: Path) -> Iterator[Flask]:
    """The application with no database behind it, for tests of pure request handling."""
    yield make_app("sqlite://", tmp_path)


# The field simulation runs for minutes on its own; `make test` runs the suite on several
# workers (pytest-xdist), which take tests in collection order. Longest first, so that the
# others fill the remaining workers meanwhile: that module, then modules with slow tests, then
# the rest, each module's tests kept together and in their order.
LONGEST_FIRST = ("test_field_sim.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    weight: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        own = 0 if module.endswith(LONGEST_FIRST) else 1 if item.get_closest_marker("slow") else 2
        weight[module] = min(weight.get(module, 2), own)
    items.sort(key=lambda item: weight[item.nodeid.split("::")[0]])
