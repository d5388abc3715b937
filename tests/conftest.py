"""Fixtures shared by the whole suite.

Every test that uses ``app`` (or ``client``, ``db_session``...) runs twice: on SQLite and on
PostgreSQL. When PostgreSQL is unreachable the PostgreSQL half is skipped with the reason,
except under ``CI=true``, where it fails: CI must prove both databases.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from server import db
from server.app import create_app
from tests.support import (
    databases,
    fast,  # noqa: F401 - cheap hashing, routes and templates compiled once
)

IN_CI = os.environ.get("CI", "").lower() == "true"
SHARED = Path(__file__).resolve().parents[2] / "shared"


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


@pytest.fixture(scope="session")
def chromium():
    """Chromium driven by Playwright; skipped without it (never under CI=true)."""
    from tests.support import browser as support

    reason = support.missing()
    if reason:
        if IN_CI:
            pytest.fail(reason + " (CI=true: the browser tests may not be skipped)")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = support.launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def device(db_session):
    """A project with the test form published and one tablet (app user) assigned to it.

    ``base`` is the tablet's OpenRosa address (``/v1/key/<token>/projects/<id>``).
    """
    from tests.support import factories
    from tests.support.openrosa import publish_form

    project = factories.project(db_session)
    app_user, token = factories.app_user(db_session, project.id)
    form = publish_form(db_session, project.id, app_user_ids=(app_user.actor_id,))
    return {
        "project": project,
        "app_user": app_user,
        "token": token,
        "form": form,
        "base": f"/v1/key/{token}/projects/{project.id}",
    }
