"""Gzip for text responses, where the client accepts it: one WSGI wrapper for the whole server.

Tablets sync over 2G and 3G, coordinators open the console on a phone: a console page, an
API answer, a CSV export, the form list, an XForm or a manifest shrink five to twenty times
under gzip. ODK Collect asks for it on every download (OkHttp sends ``Accept-Encoding: gzip``
and unpacks the body before Collect hashes it, openrosa.md §4), and so do browsers, pyodk
(requests) and R. :class:`Compression`, installed around the application by the factory
(inside :class:`~server.web.security.SecurityHeaders`, outside every other middleware), is the
one place that decides, for every response of every route:

* **When.** The request accepts gzip (``Accept-Encoding``, its ``q`` values read), is not a
  ``HEAD`` and asks for no ``Range``; the response is of a text type (:func:`compressible`:
  HTML, CSV, JSON, XML, GeoJSON, JavaScript, CSS, SVG...), not already encoded, not
  ``Cache-Control: no-transform``, not a 1xx, 204, 206 or 304, carries no ``Content-Range``,
  and is not tiny (under :data:`MIN_BYTES`, when its length is known: the 18 bytes of gzip's
  frame and the work would not pay). Zips, workbooks, photos, audio and video are never
  compressed again: they are compressed already.
* **How.** A body whose length is known and at most :data:`WHOLE_BYTES` (pages, JSON, XForms)
  is compressed in one go at level 6 and keeps an exact ``Content-Length``. Streams (exports:
  no length) and larger files are compressed as they pass, at level 1 (CSV compresses almost
  as well, several times faster), chunk by chunk, so that an export stays streamed and its
  memory flat: one chunk and zlib's window. What zlib holds back is flushed with the first
  chunk that comes :data:`FLUSH_SECONDS` or more after the last flush, so that a slow export
  keeps showing progress and no proxy times out on its silence.
* **What it says.** ``Content-Encoding: gzip``; ``Vary: Accept-Encoding`` on every response of
  a compressible type, compressed or not, so that caches keep the variants apart; the
  ``ETag`` of the compressed variant made weak (``W/"..."``: the same content, other bytes),
  which ``If-None-Match`` still matches (weak comparison), a 304 for it repeating the weak
  tag; ``Accept-Ranges`` dropped from it, ranges being served on the uncompressed bytes only
  (a request with ``Range`` is never compressed, so an interrupted download resumes as
  before). Every other header (OpenRosa's ``X-OpenRosa-*``, ``Content-Disposition``...) is
  left as the route set it.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask

# Under this many bytes a body is sent as it is.
MIN_BYTES = 1024
# Bodies of known length up to this size are compressed whole, with an exact Content-Length.
WHOLE_BYTES = 4 * 1024 * 1024
# A stream flushes what zlib holds back at most this often (and at least, while input comes).
FLUSH_SECONDS = 1.0
WHOLE_LEVEL = 6
STREAM_LEVEL = 1
_GZIP = 31  # zlib's wbits for a gzip member

TEXT_TYPES = frozenset(
    {
        "application/javascript",
        "application/json",
        "application/xml",
        "application/xhtml+xml",
        "application/x-javascript",
        "image/svg+xml",
    }
)
NEVER_STATUSES = frozenset({204, 206, 304})

StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]


def compressible(content_type: str | None) -> bool:
    """Tell whether a type is text that gzip shrinks (never zips, workbooks or media)."""
    mimetype = (content_type or "").split(";", 1)[0].strip().lower()
    if not mimetype:
        return False
    return (
        mimetype.startswith("text/")
        or mimetype in TEXT_TYPES
        or mimetype.endswith(("+json", "+xml"))
    )


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Tell whether an ``Accept-Encoding`` value allows gzip (``gzip`` itself, else ``*``)."""
    named: float | None = None
    anything: float | None = None
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        if coding in ("gzip", "x-gzip"):
            named = max(named or 0.0, quality)
        elif coding == "*":
            anything = quality
    chosen = named if named is not None else anything
    return chosen is not None and chosen > 0


def _get(headers: Headers, name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers:
        if key.lower() == lowered:
            return value
    return None


def _without(headers: Headers, *names: str) -> Headers:
    lowered = {name.lower() for name in names}
    return [(key, value) for key, value in headers if key.lower() not in lowered]


def _with_vary(headers: Headers) -> Headers:
    """Return the headers with ``Accept-Encoding`` among those named by ``Vary``."""
    vary = _get(headers, "Vary")
    if vary is None:
        return [*headers, ("Vary", "Accept-Encoding")]
    named = [part.strip() for part in vary.split(",") if part.strip()]
    if "*" in named or any(part.lower() == "accept-encoding" for part in named):
        return headers
    return [*_without(headers, "Vary"), ("Vary", ", ".join([*named, "Accept-Encoding"]))]


def weak(etag: str) -> str:
    """Return an entity tag as a weak one (``"x"`` becomes ``W/"x"``)."""
    etag = etag.strip()
    return etag if etag.startswith("W/") else f"W/{etag}"


def _weak_etag(headers: Headers) -> Headers:
    etag = _get(headers, "ETag")
    if etag is None:
        return headers
    return [*_without(headers, "ETag"), ("ETag", weak(etag))]


def _status_code(status: str) -> int:
    try:
        return int(status.split(" ", 1)[0])
    except ValueError:
        return 0


def _length(headers: Headers) -> int | None:
    value = _get(headers, "Content-Length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _asks_the_weak_tag(environ: dict[str, Any], etag: str | None) -> bool:
    """Tell whether the client's ``If-None-Match`` names the weak form of ``etag``."""
    if not etag or etag.strip().startswith("W/"):
        return False
    wanted = weak(etag)
    sent = environ.get("HTTP_IF_NONE_MATCH", "")
    return any(part.strip() == wanted for part in sent.split(","))


class _Plan:
    """What was decided for one response: pass it on, compress it whole, or as a stream."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.accepts = accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING"))
        self.wants = (
            self.accepts
            and environ.get("REQUEST_METHOD", "GET") != "HEAD"
            and "HTTP_RANGE" not in environ
        )
        self.mode: str | None = None  # "pass", "whole" or "stream", once start_response ran
        self.status = ""
        self.headers: Headers = []
        self.exc_info: Any = None
        self.written: list[bytes] = []

    def decide(self, status: str, headers: Headers) -> None:
        code = _status_code(status)
        content_type = _get(headers, "Content-Type")
        if code == 304:
            # No body and no type: the headers the full answer would have had, and the tag of
            # the variant the client holds.
            headers = _with_vary(headers)
            if self.accepts and _asks_the_weak_tag(self.environ, _get(headers, "ETag")):
                headers = _weak_etag(headers)
            self.mode, self.status, self.headers = "pass", status, headers
            return
        if not compressible(content_type):
            self.mode, self.status, self.headers = "pass", status, headers
            return
        headers = _with_vary(headers)
        length = _length(headers)
        cache_control = (_get(headers, "Cache-Control") or "").lower()
        if (
            not self.wants
            or code < 200
            or code in NEVER_STATUSES
            or _get(headers, "Content-Encoding") not in (None, "", "identity")
            or _get(headers, "Content-Range") is not None
            or "no-transform" in cache_control
            or (length is not None and length < MIN_BYTES)
        ):
            self.mode, self.status, self.headers = "pass", status, headers
            return
        headers = _weak_etag(_without(headers, "Content-Encoding", "Accept-Ranges"))
        headers.append(("Content-Encoding", "gzip"))
        if length is not None and length <= WHOLE_BYTES:
            self.mode = "whole"
        else:
            self.mode = "stream"
            headers = _without(headers, "Content-Length")
        self.status, self.headers = status, headers


class Compression:
    """WSGI wrapper: gzip for text responses where the client accepts it (see the module)."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        plan = _Plan(environ)

        def start(status: str, headers: Headers, exc_info: Any = None) -> Callable[[bytes], Any]:
            if exc_info is not None and plan.mode == "stream":
                # Headers already went out compressed: the server re-raises.
                return start_response(status, headers, exc_info)
            plan.decide(status, list(headers))
            plan.exc_info = exc_info
            if plan.mode == "whole":
                return plan.written.append  # sent once the whole body is known
            write = start_response(plan.status, plan.headers, exc_info)
            return write if plan.mode == "pass" else plan.written.append

        result = self.wsgi_app(environ, start)
        if plan.mode is None:
            # start_response is allowed to wait for the first chunk: take it now.
            result = _Started(result)
        if plan.mode == "whole":
            return self._whole(plan, result, start_response)
        if plan.mode == "stream":
            return _GzipStream(plan, result)
        return result

    @staticmethod
    def _whole(plan: _Plan, result: Iterable[bytes], start_response: StartResponse) -> list[bytes]:
        try:
            body = b"".join([*plan.written, *result])
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        compressor = zlib.compressobj(WHOLE_LEVEL, zlib.DEFLATED, _GZIP)
        packed = compressor.compress(body) + compressor.flush()
        headers = [*_without(plan.headers, "Content-Length"), ("Content-Length", str(len(packed)))]
        start_response(plan.status, headers, plan.exc_info)
        return [packed]


class _Started:
    """An application's body whose first chunk was taken (so that start_response ran)."""

    def __init__(self, result: Iterable[bytes]) -> None:
        self.result = result
        self.iterator = iter(result)
        self.first: list[bytes] = []
        for chunk in self.iterator:
            self.first.append(chunk)
            break

    def __iter__(self) -> Iterator[bytes]:
        yield from self.first
        yield from self.iterator

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            close()


class _GzipStream:
    """A body compressed as it passes: one gzip member, flushed when input waits too long."""

    def __init__(self, plan: _Plan, result: Iterable[bytes]) -> None:
        self.plan = plan
        self.result = result

    def __iter__(self) -> Iterator[bytes]:
        compressor = zlib.compressobj(STREAM_LEVEL, zlib.DEFLATED, _GZIP)
        flushed = time.monotonic()
        chunks = iter(self.result)
        while True:
            if self.plan.written:
                chunk = b"".join(self.plan.written)
                self.plan.written.clear()
            else:
                chunk = next(chunks, None)
                if chunk is None:
                    break
            if not chunk:
                continue
            out = compressor.compress(chunk)
            now = time.monotonic()
            if now - flushed >= FLUSH_SECONDS:
                # Whatever zlib still holds leaves now: at most once a second, a few bytes.
                out += compressor.flush(zlib.Z_SYNC_FLUSH)
                flushed = now
            if out:
                yield out
        yield compressor.flush()

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            close()


def init_app(app: Flask) -> None:
    """Wrap the application (the factory calls it after every middleware but the outermost)."""
    app.wsgi_app = Compression(app.wsgi_app)
