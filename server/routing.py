"""Routing from the raw request path, so that a path segment may hold ``/`` and ``%``.

ODK Central accepts any formID (``''=+/*-451%/%``, ``✅``), and clients put it in paths
percent-encoded (``/v1/projects/1/forms/%27%27%3D%2B%2F*-451%25%2F%25``). WSGI servers hand
the application a *decoded* ``PATH_INFO``, where ``%2F`` has become a separator like any
other ``/`` and ``%25`` a ``%`` that cannot be told from the start of an escape. So:

* :class:`RawPathMiddleware` (outermost) rebuilds ``PATH_INFO`` from the raw request target
  (``RAW_URI`` under gunicorn and werkzeug's servers, ``REQUEST_URI`` elsewhere): every escape
  is decoded except ``%2F`` and ``%25``, which stay as they are. When the server gives no raw
  path, or one that does not decode to its ``PATH_INFO`` (something rewrote it), only ``%``
  is escaped: paths route as before, and a segment simply cannot hold a ``/``.
* :class:`SegmentConverter` (every ``<name>`` of every route) and :class:`SlashPathConverter`
  (``<path:name>``) turn ``%2F`` and ``%25`` back into ``/`` and ``%`` in the values views
  receive, and ``url_for`` escapes ``/`` and ``%`` in one segment, so links the server emits
  (console, OpenRosa, OData) name the same form.

So ``request.path`` holds ``%2F`` and ``%25`` where the client sent them; the views, which
read their values from the converters, never see the escapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from werkzeug.routing import PathConverter, UnicodeConverter

DONE = "merit.raw_path"  # set once PATH_INFO holds the escaped form (never twice)

_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})?")
_KEPT = {0x2F: b"%2F", 0x25: b"%25"}
_SEGMENT_ESCAPE = re.compile(r"%2[Ff5]")
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*")


def _keep_slashes(match: re.Match[bytes]) -> bytes:
    if match.group(1) is None:
        return b"%25"  # a lone "%": a percent sign, as browsers read it
    byte = int(match.group(1), 16)
    return _KEPT.get(byte, bytes([byte]))


def escaped_path(raw_path: bytes) -> bytes:
    """Decode a raw path's escapes but ``%2F`` and ``%25`` (and a lone ``%`` becomes ``%25``)."""
    return _ESCAPE.sub(_keep_slashes, raw_path)


def _raw_path(environ: dict[str, Any]) -> bytes | None:
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not raw or not isinstance(raw, str):
        return None
    raw = _ABSOLUTE.sub("", raw.split("?", 1)[0].split("#", 1)[0])
    try:
        return raw.encode("latin-1")  # WSGI strings carry bytes as latin-1
    except UnicodeEncodeError:
        return None


def routed_path(environ: dict[str, Any]) -> str:
    """Return the ``PATH_INFO`` to route on: from the raw path when it can be trusted."""
    script = environ.get("SCRIPT_NAME", "")
    path = environ.get("PATH_INFO", "")
    raw = _raw_path(environ)
    if raw is not None:
        try:
            decoded_matches = unquote_to_bytes(raw) == (script + path).encode("latin-1")
        except UnicodeEncodeError:
            decoded_matches = False
        if decoded_matches:
            escaped = escaped_path(raw)
            prefix = escaped_path(script.encode("latin-1"))
            if escaped.startswith(prefix):
                return escaped[len(prefix) :].decode("latin-1")
    return path.replace("%", "%25")


class RawPathMiddleware:
    """Rebuild ``PATH_INFO`` from the raw request path (see the module's docstring)."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if not environ.get(DONE):
            environ["PATH_INFO"] = routed_path(environ)
            environ[DONE] = True
        return self.wsgi_app(environ, start_response)


def unescape_segment(value: str) -> str:
    """Turn the ``%2F`` and ``%25`` kept in a routed path back into ``/`` and ``%``."""
    return _SEGMENT_ESCAPE.sub(lambda m: "/" if m.group(0)[2] in "Ff" else "%", value)


def quote_segment(value: Any) -> str:
    """Percent-encode one path segment, ``/`` and ``%`` included (for links)."""
    return quote(str(value), safe="!$&'()*+,:;=@")


class SegmentConverter(UnicodeConverter):
    """``<name>``: one path segment, which may hold an encoded ``/`` or ``%``."""

    def to_python(self, value: str) -> str:
        return unescape_segment(value)

    def to_url(self, value: Any) -> str:
        return quote_segment(value)


class SlashPathConverter(PathConverter):
    """``<path:name>``: the rest of the path; an encoded ``/`` or ``%`` decoded like the rest."""

    def to_python(self, value: str) -> str:
        return unescape_segment(value)


def init_app(app: Any) -> None:
    """Install the converters (before any rule is added) and the middleware (outermost)."""
    app.url_map.converters["default"] = SegmentConverter
    app.url_map.converters["string"] = SegmentConverter
    app.url_map.converters["path"] = SlashPathConverter


def wrap(app: Any) -> None:
    """Wrap the whole application (call it after every other middleware is installed)."""
    app.wsgi_app = RawPathMiddleware(app.wsgi_app)
