"""Fixtures of the console's browser tests: one Chromium per test process, a page per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import browser as support


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
