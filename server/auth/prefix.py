"""WSGI middleware for ODK Central's token prefixes, ``/v1/key/<token>/`` and ``/v1/test/...``.

ODK Collect is configured with ``https://host/v1/key/<token>/projects/<id>`` as its server URL
and no password (openrosa.md §5). As Central does, the token is removed from the path before
routing, so every route serves both shapes, and kept in the WSGI environment for
authentication. Responses that contain URLs (form lists, manifests) put the prefix back with
:func:`url_prefix`, so the tablet keeps authenticating on every download. The token never
reaches ``request.path``, and so never reaches the logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import request

KEY_TOKEN = "merit.key_token"  # noqa: S105 - a WSGI environ key, not a secret
DRAFT_TOKEN = "merit.draft_token"  # noqa: S105 - a WSGI environ key
PREFIX = "merit.url_prefix"

_PATTERN = re.compile(r"^/v1/(key|test)/([^/]+)(/.*)?$")


class TokenPrefixMiddleware:
    """Move ``/v1/key/<token>`` and ``/v1/test/<token>`` from the path to the environment."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        match = _PATTERN.match(environ.get("PATH_INFO", ""))
        if match:
            kind, token, rest = match.groups()
            environ[KEY_TOKEN if kind == "key" else DRAFT_TOKEN] = token
            environ[PREFIX] = f"/v1/{kind}/{token}"
            environ["PATH_INFO"] = "/v1" + (rest or "/")
        return self.app(environ, start_response)


def url_prefix() -> str:
    """Return the token prefix of the current request ("" when none), to rebuild URLs."""
    return request.environ.get(PREFIX, "")


def key_token() -> str | None:
    """Return the app-user token of the current request's path, if any."""
    return request.environ.get(KEY_TOKEN)


def draft_token() -> str | None:
    """Return the draft-testing token of the current request's path, if any."""
    return request.environ.get(DRAFT_TOKEN)
