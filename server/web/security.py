"""Security headers: of every response of the application, and of the console's pages.

Everything the server sends that a client uploaded (a record's XML, a form's XML or workbook,
attachments, form media, exports, entity lists) is served on the console's origin, where a
coordinator is signed in. A record whose XML was a web page ran its script in their browser
with their session (issue 16). So the rule is the other way round: **every response is
untrusted content unless the console rendered it.** :class:`SecurityHeaders`, installed around
the whole application by the factory (outside every middleware, so that their own answers and
every error are covered too), gives each response

* ``X-Content-Type-Options: nosniff``: the declared type is the type; and
* ``Content-Security-Policy: default-src 'none'; sandbox`` (:data:`SERVED_CONTENT_POLICY`)
  unless the response set its own: no script, no fetch, no style sheet, an opaque origin that
  holds no cookie. Images and media still display, in a page or opened alone.

Only the console's pages (:func:`server.web.common.page`) set a policy of their own, the
console's (:func:`content_security_policy`; the pages holding ODK Web Forms a wider one,
:func:`webform_content_security_policy`, that lets the form engine run): they may run only
the scripts and styles the console serves itself, may not be framed, and never leak their
address to another site. Images come from the console itself (photos through its own routes),
``data:`` URLs, and the map tile server when one is configured (``MERIT_TILE_URL``). A new
route therefore serves sandboxed content unless it renders a console page: forgetting fails
closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request

from server import errors

SERVED_CONTENT_POLICY = "default-src 'none'; sandbox"


def tile_origin(tile_url: str | None) -> str | None:
    """Return the scheme and host of a tile URL template (for img-src), or None."""
    if not tile_url:
        return None
    parts = urlsplit(tile_url.replace("{", "").replace("}", ""))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    # Templates may name subdomains ({s}.tile.example.org): allow them all.
    host = parts.netloc.split("@")[-1]
    if host.startswith("s."):
        host = "*." + host[2:]
    return f"{parts.scheme}://{host}"


def content_security_policy() -> str:
    """Return the console's Content-Security-Policy."""
    images = ["'self'", "data:"]
    origin = tile_origin(current_app.config.get("TILE_URL"))
    if origin:
        images.append(origin)
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(images)}",
            "media-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def webform_content_security_policy() -> str:
    """Return the policy of the pages holding ODK Web Forms: the console's, plus what the
    form engine needs and nothing else.

    * ``'wasm-unsafe-eval'``: the XPath parser is WebAssembly (compiling it; no ``eval``);
    * ``style-src 'unsafe-inline'``: Web Forms and its components (PrimeVue) insert their
      style sheets and set styles from script;
    * ``font-src data:``: its fonts are inlined in its style sheet;
    * ``img-src``/``media-src blob:``: images, audio and video of the form's media and of
      the answers (a photo just taken) are shown from in-memory ``blob:`` addresses;
    * ``connect-src 'self' data:``: it fetches the form, its media and records from this
      server, and reads its inlined WebAssembly from a ``data:`` address;
    * ``worker-src blob: data:``: photos are scaled down to the form's ``max-pixels`` in a
      worker the engine starts from its own inlined code.

    Scripts still come only from the server ('self'), and the page may not be framed.
    """
    images = ["'self'", "data:", "blob:"]
    origin = tile_origin(current_app.config.get("TILE_URL"))
    if origin:
        images.append(origin)
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self' 'wasm-unsafe-eval'",
            "style-src 'self' 'unsafe-inline'",
            f"img-src {' '.join(images)}",
            "media-src 'self' blob:",
            "font-src 'self' data:",
            "connect-src 'self' data:",
            "worker-src 'self' blob: data:",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def webform_page(response: Response) -> Response:
    """Give a page holding ODK Web Forms its policy (:func:`webform_content_security_policy`)."""
    response.headers["Content-Security-Policy"] = webform_content_security_policy()
    return response


def console_page(response: Response) -> Response:
    """Give a page the console rendered the console's policy (the only ones that get it)."""
    response.headers["Content-Security-Policy"] = content_security_policy()
    return response


def add_headers(response: Response) -> Response:
    """Add the console's headers (and cache rules) to a console response.

    The Content-Security-Policy is not set here: pages set the console's
    (:func:`console_page`), files served by console routes keep the sandbox every response
    gets (:class:`SecurityHeaders`).
    """
    headers = response.headers
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "same-origin"
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.endpoint == "web.static" and request.args.get("v"):
        # Asset URLs carry their content's hash: a new file gets a new URL.
        headers["Cache-Control"] = "public, max-age=31536000, immutable"
    elif response.mimetype == "text/html":
        # Pages show personal data: never kept by a shared or back-button cache.
        headers["Cache-Control"] = "no-store"
    return response


def require_console_session() -> None:
    """Refuse a console action authenticated any other way than the console's cookie.

    Browsers replay HTTP Digest or Basic credentials by themselves once someone has typed them
    (at an OpenRosa address, say); only the cookie session comes with a CSRF token, so only it
    may change anything through the console. Bearer tokens belong to the API.
    """
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    if g.get("actor") is not None and g.get("auth_method") != "cookie":
        raise errors.Forbidden()


class SecurityHeaders:
    """WSGI wrapper: every response says ``nosniff``, and is sandboxed unless it says otherwise.

    Installed outermost (:func:`init_app`), so that the answers of the middleware inside it
    (metrics, bodies that never arrived whole) and every error carry the headers too.
    """

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, with_security_headers(headers), exc_info)

        return self.wsgi_app(environ, start)


def with_security_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return the headers with ``nosniff`` and, when they set no policy, the sandbox policy."""
    kept = [(name, value) for name, value in headers if name.lower() != "x-content-type-options"]
    kept.append(("X-Content-Type-Options", "nosniff"))
    if not any(name.lower() == "content-security-policy" for name, _value in kept):
        kept.append(("Content-Security-Policy", SERVED_CONTENT_POLICY))
    return kept


def init_app(app: Flask) -> None:
    """Wrap the whole application (call it last, after every other middleware is installed)."""
    app.wsgi_app = SecurityHeaders(app.wsgi_app)
