"""Structured logs: one JSON line per request and per event, with a request id.

Secrets never reach the log: app-user and draft tokens in paths are masked, query strings are
reduced to their parameter names (an export may carry a passphrase), and headers are not logged.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from typing import Any

from flask import Flask, Response, g, request

_TOKEN_IN_PATH = re.compile(r"^(/v1/(?:key|test)/)[^/]+")
# Any other path segment that looks like a token (``DELETE /v1/sessions/<token>``, draft
# tokens): long runs of token characters. instanceIDs (``uuid:...``) do not match.
_TOKEN_SEGMENT = re.compile(r"(?<=/)[A-Za-z0-9_$!-]{32,}(?=/|$)")


def redact_path(path: str) -> str:
    """Mask tokens in a path: ``/v1/key/<token>/...``, ``/v1/sessions/<token>``..."""
    return _TOKEN_SEGMENT.sub("***", _TOKEN_IN_PATH.sub(r"\1***", path))


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = value
        request_id = _current_request_id()
        if request_id and "request_id" not in entry:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


JsonFormatter.converter = time.gmtime


def _current_request_id() -> str | None:
    try:
        return g.get("request_id")
    except RuntimeError:  # outside an application context
        return None


def configure(level: str = "INFO", json_lines: bool = True) -> None:
    """Send the server's logs to stderr, as JSON lines or plain text."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_merit", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._merit = True  # type: ignore[attr-defined]
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)


access_log = logging.getLogger("merit.access")


def init_app(app: Flask) -> None:
    """Give every request an id and log one line when it ends."""
    if not app.config.get("TESTING"):
        configure(app.config["LOG_LEVEL"], app.config["LOG_JSON"])

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = (
            incoming if re.fullmatch(r"[A-Za-z0-9._-]{8,64}", incoming) else (uuid.uuid4().hex)
        )
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        started = g.get("request_started")
        duration_ms = round((time.perf_counter() - started) * 1000, 2) if started else None
        access_log.info(
            "request",
            extra={
                "fields": {
                    "method": request.method,
                    "path": redact_path(request.path),
                    "query": sorted(request.args.keys()),
                    "status": response.status_code,
                    "duration_ms": duration_ms,
                    "bytes_in": request.content_length,
                    "endpoint": request.endpoint,
                    "actor": g.get("actor_id"),
                    "remote": request.remote_addr,
                }
            },
        )
        return response
