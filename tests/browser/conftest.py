"""Fixtures of the console's browser tests: one Chromium per test process, a page per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import IN_CI
from tests.support import browser as support


@pytest.fixture(scope="session")
def chromium():
    """Chromium driven by Playwright; skipped without it (never under CI=true)."""
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
def console(database_url: str, tmp_path) -> Iterator[str]:
    """The console served by ``merit serve`` on the test database; its base URL."""
    with support.console_server(database_url, tmp_path) as server:
        yield server.url


def _page(chromium, viewport: dict):  # type: ignore[no-untyped-def]
    context = chromium.new_context(viewport=viewport, accept_downloads=True, locale="fr-FR")
    context.set_default_timeout(30_000)
    return context, context.new_page()


@pytest.fixture
def laptop(chromium):
    """A browser tab the size of a laptop screen."""
    context, page = _page(chromium, support.LAPTOP)
    yield page
    context.close()
