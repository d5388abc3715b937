"""Headers, responses, URLs and problem rendering for the OpenRosa endpoints.

Collect forgives nothing (openrosa.md §1): every answer carries ``X-OpenRosa-Version: 1.0``
and the upload limit; lists and manifests are ``text/xml`` and never cached; every error is an
OpenRosaResponse whose message the enumerator reads, in French by default; every 401 carries a
Digest challenge, since without one Collect can only ask for the password again.
"""

from __future__ import annotations

import ipaddress
from email.utils import formatdate
from urllib.parse import quote, urlsplit

from flask import Response, current_app, request
from flask_babel import get_locale

from server import errors
from server.auth import digest
from server.auth.prefix import url_prefix
from server.openrosa import documents

XML_TYPE = "text/xml; charset=utf-8"
# Collect fills each POST with files until the XML and the files' bytes reach the advertised
# size, not counting the multipart framing around each part (openrosa.md §4.2). Advertising the
# body limit itself, a POST that Collect thinks fits could pass the limit by a few hundred bytes
# and be refused with 413 on every retry, for ever (found by scripts/field_sim.py). Keep room
# for the framing of the most parts Collect puts in one POST (100 files, the XML and
# *isIncomplete*, names up to 255 characters): 1 KiB each.
MULTIPART_ROOM = 102 * 1024


def add_headers(response: Response) -> Response:
    """Add the headers every OpenRosa answer must carry."""
    response.headers["X-OpenRosa-Version"] = "1.0"
    response.headers["X-OpenRosa-Accept-Content-Length"] = str(
        advertised_upload_bytes(current_app.config["MAX_UPLOAD_BYTES"])
    )
    response.headers.setdefault("Date", formatdate(usegmt=True))
    response.headers["Content-Language"] = str(get_locale() or "fr")
    return response


def advertised_upload_bytes(limit: int) -> int:
    """Return the split size to advertise: the body limit less room for multipart framing."""
    return max(limit - MULTIPART_ROOM, limit // 2)


def xml_response(body: bytes, status: int = 200, *, no_cache: bool = False) -> Response:
    """Return an XML document as Collect expects it (``text/xml``, OpenRosa headers)."""
    response = Response(body, status=status, content_type=XML_TYPE)
    if no_cache:
        # Collect keeps a 50 MiB HTTP cache: lists and manifests must always be fetched anew.
        response.headers["Cache-Control"] = "no-cache"
    return add_headers(response)


def message(text: str, status: int, *, nature: str = "submit_success") -> Response:
    """Return an OpenRosaResponse with ``text`` for the enumerator."""
    return xml_response(documents.response(text, nature=nature), status)


def render_problem(problem: errors.Problem) -> Response:
    """Render a problem as an OpenRosaResponse with the problem's status."""
    response = message(problem.render_message(), problem.status, nature="error")
    response.headers.update(problem.headers)
    if problem.status == 401 and "WWW-Authenticate" not in response.headers:
        response.headers["WWW-Authenticate"] = digest.challenge(current_app.config["SECRET_KEY"])
    return response


def base_url() -> str:
    """Return the address tablets use to reach this server."""
    return current_app.config["PUBLIC_URL"] or request.host_url.rstrip("/")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_loopback_host(host: str) -> bool:
    """Tell whether ``host`` is this machine only (127.0.0.1, ::1, localhost)."""
    host = host.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    address = _ip(host)
    return address is not None and address.is_loopback


def is_loopback(url: str) -> bool:
    """Tell whether ``url`` names this machine only (or 0.0.0.0): a tablet given it reaches
    itself, never this server."""
    host = urlsplit(url).hostname or ""
    address = _ip(host)
    return is_loopback_host(host) or (address is not None and address.is_unspecified)


def external_url(path: str) -> str:
    """Return an absolute URL for ``path`` (which starts after ``/v1``), keeping the token.

    App users authenticate by the token in the URL, so every URL given to them must carry the
    same ``/v1/key/<token>`` prefix the request came with (openrosa.md §5).
    """
    return base_url() + (url_prefix() or "/v1") + path


def quoted(segment: str) -> str:
    """Percent-encode one path segment (formIDs and file names may hold any character)."""
    return quote(segment, safe="")
