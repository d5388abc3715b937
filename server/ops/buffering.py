"""Receiving request bodies whole before the application sees them (slow uploads on 2G).

A tablet on 2G sends a 3 MB photo over minutes. If the application read that body itself, the
request would hold, all those minutes, what it had taken before reading: its database session
(on SQLite the single write lock, which a POST takes at its first query, during
authentication; on PostgreSQL a pooled connection left idle in transaction). One slow tablet
would then block every other upload, and fifty would drain the connection pool.

So the body is received here first, into an unnamed temporary file (in memory up to 1 MiB),
and only then does the application run, reading it at disk speed. While it receives, a thread
holds nothing but its socket. nginx does the same job in the compose setup
(``proxy_request_buffering on``); this keeps a server without a proxy (``make run`` on a
LAN) safe too.

Also here:

* an upload that sends nothing for ``MERIT_UPLOAD_STALL_SECONDS`` is given up (408) and its
  thread freed: a tablet that left coverage without closing its connection would otherwise
  hold it for ever;
* a body cut short (the connection dropped) never reaches the application, so nothing of it is
  stored; Collect sends the whole record again later;
* the temporary file has no name, so a crash (SIGKILL, power cut) leaves nothing behind.

Bodies declared larger than ``MERIT_MAX_UPLOAD_BYTES`` are not received at all: the
application answers 413 at once, with its OpenRosa message.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from flask import Flask
from werkzeug.wsgi import ClosingIterator

from server import files, metrics
from server.logs import redact_path

log = logging.getLogger("merit.access")

MEMORY_BYTES = 1024 * 1024
READ_BYTES = 64 * 1024


class _Stalled(Exception):
    """No byte arrived within the stall timeout."""


class BufferedBodies:
    """WSGI wrapper that receives each request body completely before calling the app."""

    def __init__(self, wsgi_app: Any, *, limit: int, stall_seconds: float, directory: Path) -> None:
        self.wsgi_app = wsgi_app
        self.limit = limit
        self.stall_seconds = stall_seconds
        self.directory = directory

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked:
            wanted = self.limit + 1  # enough to know it is too large
        else:
            try:
                wanted = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                wanted = 0  # the application answers a malformed length with 400
            if wanted <= 0 or wanted > self.limit:
                return self.wsgi_app(environ, start_response)
        started = time.monotonic()
        try:
            body, size = self._receive(environ, wanted)
        except _Stalled:
            return self._refuse(environ, start_response, started, "408 Request Timeout", None)
        if size < 0 or (not chunked and size < wanted):
            body.close()
            return self._refuse(environ, start_response, started, "400 Bad Request", size)
        body.seek(0)
        environ["wsgi.input"] = body
        environ["CONTENT_LENGTH"] = str(size)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["merit.body_seconds"] = round(time.monotonic() - started, 3)
        try:
            return ClosingIterator(self.wsgi_app(environ, start_response), body.close)
        except BaseException:
            body.close()
            raise

    def _receive(self, environ: dict[str, Any], wanted: int) -> tuple[IO[bytes], int]:
        """Copy up to ``wanted`` bytes of the body to a temporary file; return it and its size.

        A connection that drops gives a short body; one that stalls raises :class:`_Stalled`.
        """
        stream = environ["wsgi.input"]
        # Under gunicorn the socket is at hand: a timeout on it bounds each wait for bytes
        # (as nginx's client_body_timeout does), not the whole upload.
        sock = environ.get("gunicorn.socket")
        previous = sock.gettimeout() if isinstance(sock, socket.socket) else None
        if isinstance(sock, socket.socket):
            sock.settimeout(self.stall_seconds)
        # Closed by the caller once the response is sent (ClosingIterator).
        body = tempfile.SpooledTemporaryFile(max_size=MEMORY_BYTES, dir=self.directory)  # noqa: SIM115
        size = 0
        try:
            with metrics.receiving_body():
                while size < wanted:
                    chunk = stream.read(min(READ_BYTES, wanted - size))
                    if not chunk:
                        break
                    body.write(chunk)
                    size += len(chunk)
        except TimeoutError as exc:  # socket.timeout is TimeoutError
            body.close()
            raise _Stalled() from exc
        except Exception:
            # The connection broke, or the chunked framing was bad: what arrived is not a
            # whole body, and must not reach the application.
            return body, -1
        finally:
            if isinstance(sock, socket.socket):
                sock.settimeout(previous)
        return body, size

    def _refuse(
        self,
        environ: dict[str, Any],
        start_response: Any,
        started: float,
        status: str,
        received: int | None,
    ) -> list[bytes]:
        """Answer a body that never arrived whole; the application never sees the request.

        Whoever sent it has gone (or stalled past Collect's own 60 s timeout), so the answer
        is for the log more than for them.
        """
        log.info(
            "request body incomplete",
            extra={
                "fields": {
                    "method": environ.get("REQUEST_METHOD"),
                    "path": redact_path(environ.get("PATH_INFO", "")),
                    "status": int(status.split()[0]),
                    "bytes_expected": environ.get("CONTENT_LENGTH"),
                    "bytes_received": received if received is None or received >= 0 else None,
                    "duration_ms": round((time.monotonic() - started) * 1000, 2),
                    "remote": environ.get("REMOTE_ADDR"),
                }
            },
        )
        text = b"The request body did not arrive whole; send it again.\n"
        start_response(
            status,
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(text))),
                ("Connection", "close"),
            ],
        )
        return [text]


def init_app(app: Flask) -> None:
    """Receive every request body whole before the application runs."""
    directory = files.private_dir(Path(app.config["DATA_DIR"]) / "staging")
    app.wsgi_app = BufferedBodies(
        app.wsgi_app,
        limit=app.config["MAX_UPLOAD_BYTES"],
        stall_seconds=app.config["UPLOAD_STALL_SECONDS"],
        directory=directory,
    )
