"""Prometheus metrics: what the server counts, and ``GET /metrics`` to read it.

Under gunicorn each worker process counts its own requests. prometheus_client's multiprocess
mode adds them up: every process writes its values to small files in
``PROMETHEUS_MULTIPROC_DIR`` (``<data dir>/prometheus``, set and emptied at start by
``server/gunicorn_conf.py``), and ``/metrics`` reads them all. Without that variable (tests, a
single process) the ordinary in-process registry is used.

    merit_submissions_received_total{outcome}        records accepted: created, duplicate, edited
    merit_submission_attachments_received_total      attachment files accepted with them
    merit_submission_conflicts_total                 same instanceID, different XML (409.1)
    merit_submission_rejections_total{code}          uploads refused, by problem code
    merit_http_requests_total{endpoint,method,status}
    merit_http_request_duration_seconds{endpoint,method}    until the response is ready
    merit_http_request_body_seconds                  receiving request bodies (slow uploads)
    merit_http_request_bodies_receiving              bodies being received right now
    merit_http_request_bodies_refused_total{reason}  bodies refused or given up before the view:
                                                     busy, busy_client, stalled, too_slow, cut_short
    merit_exports_total{format}, merit_export_duration_seconds{format},
    merit_export_rows_total{format}
    merit_submission_conflicts_open                  conflicts waiting for a coordinator (gauge)
    merit_spool_files, merit_spool_bytes, merit_spool_max_bytes, merit_spool_oldest_age_seconds
    merit_s3_errors_total{operation,code}            S3 calls that failed (after boto3's retries)

Other packages report through the functions here (:func:`observe_export`,
:func:`record_received`...), never through prometheus_client directly, so that names and
labels stay in one place.
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, g, request
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Request latencies: a form list takes milliseconds, an upload's processing up to a minute.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Receiving a body: instant on a LAN, minutes from a tablet on 2G.
_BODY_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800)
_EXPORT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

SUBMISSIONS = Counter(
    "merit_submissions_received",
    "Records (or parts of split uploads) accepted from devices, by outcome.",
    ["outcome"],
)
ATTACHMENTS = Counter(
    "merit_submission_attachments_received",
    "Attachment files accepted with records.",
)
CONFLICTS = Counter(
    "merit_submission_conflicts",
    "Uploads whose instanceID was known with different XML (kept for review, 409.1).",
)
REJECTIONS = Counter(
    "merit_submission_rejections",
    "Uploads refused, by problem code (409.1 conflict, 413.1 too large, 503.2 storage busy...).",
    ["code"],
)
REQUESTS = Counter(
    "merit_http_requests",
    "HTTP requests answered, by endpoint, method and status.",
    ["endpoint", "method", "status"],
)
LATENCY = Histogram(
    "merit_http_request_duration_seconds",
    "Time from the request reaching the application to its response being ready.",
    ["endpoint", "method"],
    buckets=_LATENCY_BUCKETS,
)
BODY_SECONDS = Histogram(
    "merit_http_request_body_seconds",
    "Time spent receiving request bodies before the application saw them.",
    buckets=_BODY_BUCKETS,
)
BODIES_RECEIVING = Gauge(
    "merit_http_request_bodies_receiving",
    "Request bodies (uploads) being received right now.",
    multiprocess_mode="livesum",
)
BODIES_REFUSED = Counter(
    "merit_http_request_bodies_refused",
    "Request bodies refused unread (busy, busy_client) or given up (stalled, too_slow, "
    "cut_short) before the application saw them.",
    ["reason"],
)
EXPORTS = Counter("merit_exports", "Exports produced, by format.", ["format"])
EXPORT_SECONDS = Histogram(
    "merit_export_duration_seconds",
    "Time to produce an export, by format.",
    ["format"],
    buckets=_EXPORT_BUCKETS,
)
EXPORT_ROWS = Counter("merit_export_rows", "Rows written by exports, by format.", ["format"])
S3_ERRORS = Counter(
    "merit_s3_errors",
    "S3 calls that failed after boto3's retries, by operation and error code.",
    ["operation", "code"],
)


# ---- what other packages call -----------------------------------------------------------------


def observe_export(format: str, seconds: float, rows: int | None = None) -> None:
    """Count one finished export of ``format`` (csv, xlsx, geojson...) and its duration."""
    label = _label(format)
    EXPORTS.labels(label).inc()
    EXPORT_SECONDS.labels(label).observe(max(seconds, 0.0))
    if rows:
        EXPORT_ROWS.labels(label).inc(rows)


def record_received(receipt: Any) -> None:
    """Count a record intake accepted (a :class:`server.submissions.intake.Receipt`)."""
    SUBMISSIONS.labels(receipt.outcome).inc()
    received = len(getattr(receipt, "attachments_received", ()) or ())
    if received:
        ATTACHMENTS.inc(received)


def record_rejected(exc: BaseException) -> None:
    """Count an upload refused with ``exc`` (a Problem, a 413, or anything unexpected)."""
    from werkzeug.exceptions import RequestEntityTooLarge

    from server.errors import Problem, XmlConflict, database_unavailable

    if isinstance(exc, Problem):
        code = exc.code
    elif isinstance(exc, RequestEntityTooLarge):
        code = "413.1"
    elif (unavailable := database_unavailable(exc)) is not None:
        code = unavailable.code
    else:
        code = "500.1"
    REJECTIONS.labels(code).inc()
    if isinstance(exc, XmlConflict):
        CONFLICTS.inc()


def record_body_refused(reason: str) -> None:
    """Count a request body refused or given up before the view (see server.ops.buffering)."""
    BODIES_REFUSED.labels(_label(reason)).inc()


@contextmanager
def receiving_body() -> Iterator[None]:
    """Count a request body as being received while the block runs; time it."""
    BODIES_RECEIVING.inc()
    started = time.perf_counter()
    try:
        yield
    finally:
        BODIES_RECEIVING.dec()
        BODY_SECONDS.observe(time.perf_counter() - started)


def _label(value: str) -> str:
    return "".join(c for c in str(value).lower() if c.isalnum() or c in "._-")[:24] or "unknown"


# ---- gunicorn: the shared folder of the worker processes ----------------------------------------


# ---- the application side -----------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Time every request, count S3 failures, and serve ``/metrics``."""

    @app.after_request
    def _observe(response):
        endpoint = request.endpoint or "unmatched"
        REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
        # Set by server.logs when the request reached the application (before authentication,
        # so refused requests are timed too).
        started = g.get("request_started")
        if started is not None:
            LATENCY.labels(endpoint, request.method).observe(time.perf_counter() - started)
        return response

    _watch_s3(app.extensions.get("merit.storage"))
    app.wsgi_app = MetricsEndpoint(app.wsgi_app, app)


def _watch_s3(store: Any) -> None:
    """Count failed S3 calls through boto3's own events (the S3 store stays untouched)."""
    client = getattr(store, "client", None)
    if client is None:
        return

    def after_call(http_response: Any = None, model: Any = None, **_: Any) -> None:
        status = getattr(http_response, "status_code", 200)
        operation = getattr(model, "name", "unknown")
        # HEAD before every write asks whether the blob is already there: 404 is an answer.
        if status < 300 or (status == 404 and operation == "HeadObject"):
            return
        S3_ERRORS.labels(operation, str(status)).inc()

    def after_error(exception: BaseException | None = None, **kwargs: Any) -> None:
        context = kwargs.get("context") or {}
        operation = str(kwargs.get("event_name", "")).rpartition(".")[2] or "unknown"
        operation = context.get("operation_name", operation)
        S3_ERRORS.labels(operation, type(exception).__name__).inc()

    client.meta.events.register("after-call.s3", after_call)
    client.meta.events.register("after-call-error.s3", after_error)


class SpoolCollector:
    """Spool depth read at scrape time (the spool folder is shared by every worker)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """Yield the spool's files, bytes, bound and the age of its oldest file."""
        runtime = self.app.extensions.get("merit.storage.runtime")
        if runtime is None:
            return
        report = runtime.spool.report()
        age = (dt.datetime.now(dt.UTC) - report.oldest).total_seconds() if report.oldest else 0
        yield GaugeMetricFamily(
            "merit_spool_files", "Attachments waiting in the local spool.", value=report.files
        )
        yield GaugeMetricFamily(
            "merit_spool_bytes", "Bytes waiting in the local spool.", value=report.bytes
        )
        yield GaugeMetricFamily(
            "merit_spool_max_bytes", "Bound of the local spool.", value=report.max_bytes
        )
        yield GaugeMetricFamily(
            "merit_spool_oldest_age_seconds",
            "Age of the oldest attachment waiting in the spool (0 when empty).",
            value=max(age, 0.0),
        )


class ConflictsCollector:
    """Conflicts waiting for a coordinator, counted in the database at scrape time."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """Yield how many conflicts wait to be settled (nothing when the database is away)."""
        from server import db
        from server.submissions import conflicts

        try:
            with self.app.app_context(), db.database().session(readonly=True) as db_session:
                waiting = conflicts.count_all_open(db_session)
        except Exception:  # the other metrics still answer while the database is away
            self.app.logger.warning("could not count the open conflicts", exc_info=True)
            return
        yield GaugeMetricFamily(
            "merit_submission_conflicts_open",
            "Records sent again with other answers, waiting for a coordinator's decision.",
            value=waiting,
        )


def scrape(app: Flask) -> bytes:
    """Return every metric in Prometheus's text format."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        counted = generate_latest(registry)
    else:
        counted = generate_latest(REGISTRY)
    local = CollectorRegistry(auto_describe=True)
    local.register(SpoolCollector(app))
    local.register(ConflictsCollector(app))
    return counted + generate_latest(local)


class MetricsEndpoint:
    """WSGI wrapper answering ``GET /metrics`` before the application's own authentication.

    Prometheus authenticates with its own bearer token (``MERIT_METRICS_TOKEN``), which is not
    a user session: the application's authentication would refuse it, so this endpoint is
    answered here, outside it. Without a token the endpoint is open: block it at the proxy.
    """

    def __init__(self, wsgi_app: Any, app: Flask) -> None:
        self.wsgi_app = wsgi_app
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            return self.wsgi_app(environ, start_response)
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            allow = [("Allow", "GET")]
            return _plain(start_response, "405 Method Not Allowed", "Use GET.\n", allow)
        token = self.app.config.get("METRICS_TOKEN") or ""
        if token:
            sent = environ.get("HTTP_AUTHORIZATION", "")
            expected = f"Bearer {token}"
            if not hmac.compare_digest(sent.encode(), expected.encode()):
                return _plain(
                    start_response,
                    "401 Unauthorized",
                    "This endpoint needs Authorization: Bearer <MERIT_METRICS_TOKEN>.\n",
                    [("WWW-Authenticate", 'Bearer realm="metrics"')],
                )
        body = scrape(self.app)
        start_response(
            "200 OK",
            [
                ("Content-Type", CONTENT_TYPE_LATEST),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def _plain(
    start_response: Any, status: str, text: str, headers: list[tuple[str, str]]
) -> list[bytes]:
    body = text.encode()
    length = ("Content-Length", str(len(body)))
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), length, *headers])
    return [body]
