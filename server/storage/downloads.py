"""Sending a blob to a client: the one function every download view calls.

    return send_blob(attachment.blob, attachment.name, "image/jpeg")

handles what downloads of form media and submission attachments need over weak networks:
``ETag`` (the SHA-256) and ``If-None-Match`` (304), single ``Range`` requests (206, 416) so an
interrupted video resumes, ``HEAD``, a ``Content-Disposition`` whose ``filename*`` keeps
French names intact, and, when ``MERIT_S3_PRESIGNED_DOWNLOADS`` is on, a redirect to a
short-lived presigned URL instead of streaming through the server. Bytes are streamed chunk by
chunk, from the spool if the blob still waits there.

Files come from tablets and are shown to coordinators in a browser: only types that cannot
run script are ever served ``inline``; anything else (HTML, SVG, XML, JavaScript...) is
forced to ``attachment``. Every response of the application says ``X-Content-Type-Options:
nosniff`` and is sandboxed by its Content-Security-Policy (:mod:`server.web.security`). A
bucket's answer to a presigned URL carries neither: types a browser might run or sniff are
always streamed through the server, and the others leave the bucket as downloads
(``attachment``), but for images, audio and video, which a browser only displays.
"""

from __future__ import annotations

import logging

from flask import Response, redirect, request

from server import errors
from server.storage import services
from server.storage.base import BlobMissing, StorageUnavailable, content_disposition
from server.storage.models import Blob

log = logging.getLogger(__name__)

# Types a browser displays without running anything in them. Everything else is a download.
INLINE_TYPES = frozenset(
    {
        "application/json",
        "application/pdf",
        "image/bmp",
        "image/gif",
        "image/jpeg",
        "image/png",
        "image/webp",
        "text/csv",
        "text/plain",
    }
)
INLINE_FAMILIES = ("audio/", "video/")
# What a bucket may hand over inline (a presigned URL): a browser displays these and nothing
# else, and no nosniff or sandbox policy comes with the bucket's answer.
BUCKET_INLINE_FAMILIES = ("image/", "audio/", "video/")


def may_show_inline(content_type: str) -> bool:
    """Tell whether a browser may display this type inline (it cannot run script)."""
    mimetype = content_type.split(";", 1)[0].strip().lower()
    return mimetype in INLINE_TYPES or mimetype.startswith(INLINE_FAMILIES)


def send_blob(blob: Blob, filename: str, content_type: str, *, inline: bool = False) -> Response:
    """Answer the current GET or HEAD request with a blob's bytes (or a 304, 206, 416, 307).

    ``inline`` asks for display in the browser; it is ignored for types that could run script.
    Raises :class:`~server.errors.NotFound` when the bytes are gone and
    :class:`errors.FileUnavailable` (503) when the store cannot be reached and the spool lacks them.
    """
    content_type = content_type or "application/octet-stream"
    inline = inline and may_show_inline(content_type)
    headers = {
        "Content-Disposition": content_disposition(filename, inline=inline),
        "Accept-Ranges": "bytes",
        # The same URL may name another file tomorrow (a replaced media file): revalidate,
        # which costs one 304 thanks to the ETag.
        "Cache-Control": "private, no-cache",
    }
    if request.if_none_match.contains_weak(blob.sha256):
        response = Response(status=304, headers=headers)
        response.set_etag(blob.sha256)
        return response

    redirect_to = _presigned(blob, filename, content_type, inline)
    if redirect_to:
        # 307 keeps the method; Collect sends no credentials to another host, and the URL
        # carries its own short-lived signature (openrosa.md §8.8).
        response = redirect(redirect_to, code=307)
        response.headers["Cache-Control"] = "no-store"
        return response

    start, end, status = _requested_range(blob)
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
    length = 0 if end < start else end - start + 1
    try:
        if request.method == "HEAD":
            if services.location(blob.sha256) is None:
                raise BlobMissing(blob.sha256)
            body = None
        else:
            body = services.read(blob, start, end) if length else iter(())
    except BlobMissing:
        log.error("blob %s is catalogued but neither in the store nor the spool", blob.sha256)
        raise errors.NotFound() from None
    except StorageUnavailable as exc:
        log.warning("cannot read blob %s: %s", blob.sha256, exc)
        raise errors.FileUnavailable(headers={"Retry-After": "60"}) from exc

    response = Response(
        body, status=status, headers=headers, mimetype=None, direct_passthrough=True
    )
    response.headers["Content-Type"] = content_type
    response.content_length = length
    response.set_etag(blob.sha256)
    return response


def _presigned(blob: Blob, filename: str, content_type: str, inline: bool) -> str | None:
    # Types a browser might run or sniff are always streamed: a bucket's response cannot
    # carry nosniff, nor the sandbox policy.
    if _looks_active(content_type):
        return None
    mimetype = content_type.split(";", 1)[0].strip().lower()
    inline = inline and mimetype.startswith(BUCKET_INLINE_FAMILIES)
    try:
        return services.presigned_url(blob, filename, content_type, inline=inline)
    except StorageUnavailable:
        return None  # stream it instead, perhaps from the spool


def _looks_active(content_type: str) -> bool:
    mimetype = content_type.split(";", 1)[0].strip().lower()
    return (
        mimetype.startswith("text/")
        or "xml" in mimetype
        or "html" in mimetype
        or "script" in mimetype
        or mimetype == "application/octet-stream"
    )


def _requested_range(blob: Blob) -> tuple[int, int, int]:
    """Return (first byte, last byte, status) for the request: 200 whole, 206 partial."""
    whole = (0, blob.size - 1, 200)
    requested = request.range
    if requested is None or requested.units != "bytes":
        return whole
    # Resume only if the client's partial copy is of this very file (RFC 9110 §13.1.5).
    if "If-Range" in request.headers and request.if_range.etag != blob.sha256:
        return whole
    if len(requested.ranges) != 1:
        return whole  # several ranges at once: allowed to answer with the whole file
    bounds = requested.range_for_length(blob.size)
    if bounds is None:
        raise errors.RangeNotSatisfiable(
            size=blob.size, headers={"Content-Range": f"bytes */{blob.size}"}
        )
    return bounds[0], bounds[1] - 1, 206
