"""Security headers of every console response.

The console shows sensitive records (detainees, youth) and takes uploads: its pages may run
only the scripts and styles it serves itself, may not be framed, and never leak their address
to another site. Images come from the console itself (photos through its own routes), ``data:``
URLs, and the map tile server when one is configured (``MERIT_TILE_URL``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Response, current_app, g, request

from server import errors


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


def add_headers(response: Response) -> Response:
    """Add the security headers (and cache rules) to a console response."""
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy()
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
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
