"""The hostile suite: each module is one threat (who attacks) and one topic (what they try).

Modules are named ``test_<threat>_<topic>.py``; the threats are those of SECURITY.md:

    tablet          someone holding an app user's token (a lost or stolen tablet)
    analyst         a project viewer without the personal-data right
    other_project   a coordinator of another project
    anonymous       any client on the network, without credentials
    local_account   another account on the server's machine
    backup          someone holding a copy of a backup

Each runs against a real server (``merit serve``: gunicorn, as in production) on SQLite and on
PostgreSQL, built by :func:`tests.support.site.start_site`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.site import Site, start_site


@pytest.fixture(scope="module")
def site(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A running server with its cast and one record holding planted personal values."""
    with start_site(module_database_url, tmp_path_factory.mktemp("site")) as running:
        yield running
