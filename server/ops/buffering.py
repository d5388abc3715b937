"""Request bodies: received whole, once it is known who sends them, before the view runs.

**Whole before the view (slow uploads on 2G).** A tablet on 2G sends a 3 MB photo over minutes.
If the view read that body itself, the request would hold, all those minutes, what it had taken
before reading: its database session (on SQLite the single write lock, which a request that
changes data takes at its first statement; on PostgreSQL a pooled connection left idle in
transaction). One slow tablet would then block every other upload, and fifty would drain the
connection pool. So the body is received first, into an unnamed temporary file (in memory up
to 1 MiB), holding nothing but a thread and its socket, and the view then reads it at disk
speed. nginx does the same job in the compose setup (``proxy_request_buffering on``); this
keeps a server without a proxy (``make run`` on a LAN) safe too.

**Once the sender is known (floods, issue 16).** Anyone on the network can open connections,
declare a megabyte each and send it a byte at a time: seventy such clients held every thread,
and ``/healthz`` stopped answering. So every request with a body goes through these steps, in
this order, whatever its route:

1. *Authentication* (:mod:`server.auth.authenticate`) reads only the URL and the headers: an
   unknown or revoked token in ``/v1/key/<token>/`` (one indexed query), a wrong password or
   bearer token, is refused (403, 401) before a byte of the body is read.
2. *Admission* (:class:`Admission`): bodies from clients without credentials get a bounded
   share of the worker's threads, ``MERIT_ANONYMOUS_BODIES`` at once, of which one client
   address may use ``MERIT_ANONYMOUS_BODIES_PER_CLIENT``. Beyond that share the body is
   refused unread, 503 with ``Retry-After``. Tablets and signed-in users are not counted:
   the rest of the threads are theirs, and health checks (no body) never wait on a body.
3. *Receiving* (:meth:`Bodies.receive`), with the request's database transaction ended first,
   within two bounds (408 beyond either, and the body never reaches the view):

   * ``MERIT_UPLOAD_STALL_SECONDS`` of silence: a tablet that left coverage without closing
     its connection would otherwise hold its thread for ever;
   * the minimum rate: once ``MERIT_UPLOAD_GRACE_SECONDS`` have passed, the body must have
     arrived at ``MERIT_UPLOAD_MIN_BYTES_PER_SECOND`` on average, at every moment. A read of
     the socket restarts its timeout at each byte it gets, so this bound is kept by a
     watchdog (:class:`_Watchdog`, one thread per process) that shuts the reading side of a
     socket whose body has fallen behind. Reads start small (a few seconds' worth at the
     minimum rate) and grow while the body comes fast, so that a slow body is cut within
     seconds of falling behind and a fast one is read in large steps.

   A body cut short (the connection dropped) never reaches the view either, so nothing of it
   is stored; Collect sends the whole record again later.
4. The view reads the body from the temporary file, which has no name: a crash (SIGKILL,
   power cut) leaves nothing behind.

Steps 2 and 3 run from a hook that follows authentication, and from :class:`Request`, whose
stream receives the body first whoever asks for it (the console's CSRF check reads the form
during authentication): no code reads a body around these rules.

The client's address is the one :class:`~werkzeug.middleware.proxy_fix.ProxyFix` gives, from
``X-Forwarded-For`` as written by the ``MERIT_TRUST_PROXY`` proxies in front, so that behind
nginx each client is counted apart (nginx then receives bodies itself, and hands them over at
local speed). With ``MERIT_TRUST_PROXY`` set, a client that can reach gunicorn directly writes
its own address; the share of all anonymous bodies holds regardless.

Bodies declared larger than ``MERIT_MAX_UPLOAD_BYTES`` are not received at all: the view
answers 413 at once, with its OpenRosa message.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import IO, Any

import flask
from flask import Flask, current_app, has_app_context
from flask_babel import lazy_gettext
from werkzeug.utils import cached_property

from server import db, errors, files, metrics
from server.auth.access import current_actor
from server.logs import redact_path

log = logging.getLogger("merit.access")

MEMORY_BYTES = 1024 * 1024
READ_BYTES = 64 * 1024
# A read asks at first for this many seconds' worth of body at the minimum rate: the watchdog
# acts between reads, so this is how far behind the minimum a slow body may fall before it is
# cut. Reads double while each takes less than a second.
READ_AHEAD_SECONDS = 4
BUSY_RETRY_AFTER_SECONDS = 30

RECEIVED = "merit.body_received"  # WSGI environ keys
BODY_FILE = "merit.body_file"


class _Refused(Exception):
    """The body did not arrive whole: ``reason`` for the metrics, ``problem`` for the client."""

    def __init__(self, reason: str, problem: errors.Problem, received: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.problem = problem
        self.received = received


def client_key(address: str | None) -> str:
    """Return the unit a client is counted by: its IPv4 address, or its IPv6 /64 network."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if ip.version == 6 and ip.ipv4_mapped is None:
        # One subscriber gets a whole /64 and may use any address in it.
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(getattr(ip, "ipv4_mapped", None) or ip)


class Admission:
    """How many bodies of clients without credentials one worker receives at once."""

    def __init__(self, anonymous: int, per_client: int) -> None:
        self.anonymous = anonymous
        self.per_client = per_client
        self._lock = threading.Lock()
        self._total = 0
        self._by_client: Counter[str] = Counter()

    @contextmanager
    def anonymous_body(self, address: str | None) -> Iterator[None]:
        """Count one anonymous body from ``address`` while the block runs; raise if no room."""
        client = client_key(address)
        with self._lock:
            if self._total >= self.anonymous:
                reason = "busy"
            elif self._by_client[client] >= self.per_client:
                reason = "busy_client"
            else:
                reason = ""
                self._total += 1
                self._by_client[client] += 1
        if reason:
            metrics.record_body_refused(reason)
            retry = str(BUSY_RETRY_AFTER_SECONDS)
            raise errors.UploadsBusy(headers={"Retry-After": retry})
        try:
            yield
        finally:
            with self._lock:
                self._total -= 1
                self._by_client[client] -= 1
                if self._by_client[client] <= 0:
                    del self._by_client[client]


class _Watchdog:
    """Shuts the reading side of sockets whose body has fallen behind: one thread per process.

    A blocked ``recv`` then returns at once, as if the client had stopped sending, and the
    receiving thread learns from :meth:`forget` that its body was cut.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._due: dict[socket.socket, float] = {}
        self._cut: set[socket.socket] = set()
        self._next: float | None = None
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, deadline: float) -> None:
        """Cut ``sock``'s reading side at ``deadline`` unless watched again or forgotten first."""
        with self._changed:
            self._due[sock] = deadline
            if self._thread is None or not self._thread.is_alive():  # first use, or forked
                self._thread = threading.Thread(target=self._run, name="body-watchdog")
                self._thread.daemon = True
                self._thread.start()
            if self._next is None or deadline < self._next:
                self._changed.notify()

    def forget(self, sock: socket.socket) -> bool:
        """Stop watching ``sock``; return whether its body was cut."""
        with self._changed:
            self._due.pop(sock, None)
            if sock in self._cut:
                self._cut.discard(sock)
                return True
            return False

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for sock in [s for s, deadline in self._due.items() if deadline <= now]:
                    del self._due[sock]
                    self._cut.add(sock)
                    with suppress(OSError):  # already closed
                        sock.shutdown(socket.SHUT_RD)
                self._next = min(self._due.values(), default=None)
                self._changed.wait(None if self._next is None else max(self._next - now, 0.01))


class Bodies:
    """The request bodies of one worker process: their limits, admission and watchdog."""

    def __init__(
        self,
        config: Mapping[str, Any],
        directory: Path,
        *,
        release: Callable[[], None] = db.end_transaction,
    ) -> None:
        self.limit = config["MAX_UPLOAD_BYTES"]
        self.stall_seconds = config["UPLOAD_STALL_SECONDS"]
        self.grace_seconds = config["UPLOAD_GRACE_SECONDS"]
        self.min_rate = config["UPLOAD_MIN_BYTES_PER_SECOND"]
        self.directory = directory
        self.admission = Admission(
            config["ANONYMOUS_BODIES"], config["ANONYMOUS_BODIES_PER_CLIENT"]
        )
        self.watchdog = _Watchdog()
        # What the request holds that must not wait on the network: its database transaction.
        self.release = release

    def receive(self, environ: dict[str, Any], *, address: str | None, signed_in: bool) -> None:
        """Receive the body of the request ``environ`` describes, whole, once (steps 2 and 3).

        Raises a Problem (503, 408, 400) when the body is refused or does not arrive whole.
        """
        if environ.get(RECEIVED):
            return
        environ[RECEIVED] = True
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked:
            wanted = self.limit + 1  # enough to know it is too large
        else:
            try:
                wanted = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                wanted = 0  # the view answers a malformed length with 400
            if wanted <= 0 or wanted > self.limit:
                return
        try:
            with nullcontext() if signed_in else self.admission.anonymous_body(address):
                # Nothing but the thread and its socket is held while the bytes come in.
                self.release()
                started = time.monotonic()
                try:
                    body, size = self._receive(environ, wanted, chunked=chunked)
                except _Refused as refused:
                    metrics.record_body_refused(refused.reason)
                    self._log(environ, started, refused)
                    raise refused.problem from None
        except errors.Problem:
            # Refused or given up: nothing may read the rest from the socket afterwards.
            environ["wsgi.input"] = io.BytesIO()
            raise
        body.seek(0)
        environ[BODY_FILE] = body
        environ["wsgi.input"] = body
        environ["CONTENT_LENGTH"] = str(size)
        environ.pop("HTTP_TRANSFER_ENCODING", None)

    def _receive(
        self, environ: dict[str, Any], wanted: int, *, chunked: bool
    ) -> tuple[IO[bytes], int]:
        """Copy up to ``wanted`` bytes of the body to a temporary file; return it and its size."""
        stream = environ["wsgi.input"]
        # Under gunicorn the socket is at hand: its timeout bounds each wait for bytes (as
        # nginx's client_body_timeout does), the watchdog the pace of the whole body.
        sock = environ.get("gunicorn.socket")
        if not isinstance(sock, socket.socket):
            sock = None
        previous = sock.gettimeout() if sock is not None else None
        if sock is not None:
            sock.settimeout(self.stall_seconds)
        # Closed at the end of the request (see init_app), or here when refused.
        body = tempfile.SpooledTemporaryFile(max_size=MEMORY_BYTES, dir=self.directory)  # noqa: SIM115
        started = time.monotonic()
        first_read = max(1024, min(READ_BYTES, self.min_rate * READ_AHEAD_SECONDS))
        step = first_read
        size = 0
        failure: str | None = None
        try:
            with metrics.receiving_body():
                while size < wanted:
                    asked = min(step, wanted - size)
                    if sock is not None:
                        # Whatever its pauses, the body must have reached size + asked bytes
                        # by the time the minimum rate says so.
                        due = self.grace_seconds + (size + asked) / self.min_rate
                        self.watchdog.watch(sock, started + due)
                    began = time.monotonic()
                    chunk = stream.read(asked)
                    if not chunk:
                        break
                    body.write(chunk)
                    size += len(chunk)
                    step = min(step * 2, READ_BYTES) if time.monotonic() - began < 1 else first_read
        except TimeoutError:  # socket.timeout is TimeoutError
            failure = "stalled"
        except Exception:
            # The connection broke, or the chunked framing was bad: what arrived is not a
            # whole body, and must not reach the view.
            failure = "cut_short"
        finally:
            cut = sock is not None and self.watchdog.forget(sock)
            if sock is not None:
                with suppress(OSError):
                    sock.settimeout(previous)
        if size >= wanted or (chunked and failure is None and not cut):
            return body, size
        body.close()
        if cut:
            raise _Refused("too_slow", errors.UploadTooSlow(), size)
        if failure == "stalled":
            raise _Refused("stalled", errors.UploadTooSlow(), size)
        reason = lazy_gettext("the body did not arrive whole; send it again")
        raise _Refused("cut_short", errors.BadRequest(reason=reason), size)

    def _log(self, environ: dict[str, Any], started: float, refused: _Refused) -> None:
        log.info(
            "request body incomplete",
            extra={
                "fields": {
                    "method": environ.get("REQUEST_METHOD"),
                    "path": redact_path(environ.get("PATH_INFO", "")),
                    "reason": refused.reason,
                    "status": refused.problem.status,
                    "bytes_expected": environ.get("CONTENT_LENGTH"),
                    "bytes_received": refused.received,
                    "duration_ms": round((time.monotonic() - started) * 1000, 2),
                    "remote": environ.get("REMOTE_ADDR"),
                }
            },
        )


def receive_body(req: flask.Request | None = None) -> None:
    """Receive the current request's body, once: admitted by who sends it, then bounded in time.

    Runs as a hook right after authentication (so before every view), and from
    :attr:`Request.stream` if anything reads the body before that.
    """
    req = req if req is not None else flask.request
    if not has_app_context():
        return  # a request object built by hand, outside the application
    bodies: Bodies = current_app.extensions["merit.bodies"]
    bodies.receive(req.environ, address=req.remote_addr, signed_in=current_actor() is not None)
    req.__dict__.pop("content_length", None)  # cached from the headers; the body may be chunked


class Request(flask.Request):
    """Flask's request, whose body is received whole by :func:`receive_body` before any read."""

    @cached_property
    def stream(self) -> IO[bytes]:
        """The body, received first if nothing has received it yet."""
        receive_body(self)
        return flask.Request.stream.fget(self)


def _close_body(_exc: BaseException | None = None) -> None:
    body = flask.request.environ.pop(BODY_FILE, None)
    if body is not None:
        body.close()


def init_app(app: Flask) -> None:
    """Receive every request body whole, once its sender is known, before the view runs."""
    from server.auth.authenticate import authenticate

    if authenticate not in app.before_request_funcs.get(None, []):
        # Admission is by who sends the body: that must be known first.
        raise RuntimeError("server.auth.authenticate must be installed before server.ops")
    directory = files.private_dir(Path(app.config["DATA_DIR"]) / "staging")
    app.extensions["merit.bodies"] = Bodies(app.config, directory)
    app.request_class = Request
    app.before_request(receive_body)
    app.teardown_request(_close_body)
