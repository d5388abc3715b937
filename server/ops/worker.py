"""gunicorn's threaded worker and logger, adjusted for tablets on slow links.

gthread serves each request in a thread of a pool; a request uploading over 2G holds its thread
for minutes, while holding nothing else (:mod:`server.ops.buffering`). Stock gthread accepts
new connections as long as it has fewer than ``worker_connections`` (1000) open, whether or not
a thread is free: a worker whose threads are all taken by slow uploads would still accept a
fast client's connection, and that client would wait in the pool's queue until an upload
finished, minutes later, while another worker sat idle. :class:`FieldWorker` accepts only
while it has a free thread, so a connection stays in the listening socket's queue until a
worker that can serve it at once takes it; and it stops keeping connections alive when it is
nearly full, so that a client's next request goes back through that queue instead of waiting
behind uploads on a full worker.

Two things gthread does on its own would let clients that never finish what they started hold
the worker (issue 16):

* after a response, gthread waits up to 5 s for the rest of a body the application did not read
  (one it refused: an unknown token, too many anonymous uploads, too large) so as to reuse the
  connection; a client trickling that body holds the thread those 5 s, every time it
  reconnects. :class:`FieldWorker` keeps the connection only if the rest has already arrived,
  and closes it otherwise (an honest client opens a new one);
* to close a connection, gthread half-closes it and waits up to 2 s for the client to close its
  side (RFC 9112 §9.6, so that the response is not lost to a reset), on the worker's main loop:
  a client that never closes stops the worker from accepting, answering or finishing anything
  for those 2 s. :class:`FieldWorker` waits for such clients in its poller instead, alongside
  everything else.

:class:`RedactingLogger` writes gunicorn's own lines as JSON (like the application's) and masks
tokens in them (:mod:`server.ops.redact`).
"""

from __future__ import annotations

import os
import selectors
import socket
import ssl
import time
from contextlib import suppress
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from server.ops.redact import protect

# How long a thread may wait for the rest of a body the application left unread, when the
# client may already have sent it; after that the connection is closed instead.
LEFTOVER_SECONDS = 0.1
# A closing connection waits this long for the client to close its side (gunicorn's own
# figures), and no more than this many connections wait at once (file descriptors).
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024
LINGER_MAX = 1024


class FieldWorker(ThreadWorker):
    """gthread that accepts a connection only when a thread is free to serve it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Requests handed to the thread pool and not finished. Changed only on the main
        # thread (accept, poller callbacks, and completions run there through gthread's
        # method queue), so it needs no lock.
        self._busy = 0
        self._connection_limit = 0
        self._keepalive_limit = 0
        # Closing sockets waiting for their client to close: socket -> [deadline, bytes read].
        # Main thread only, like _busy; in deadline order (insertion order, same delay).
        self._lingering: dict[socket.socket, list[float]] = {}
        super().__init__(*args, **kwargs)

    @property
    def worker_connections(self) -> int:
        """Room for new connections: none while every thread is busy."""
        # ThreadWorker.run() accepts while nr_conns < worker_connections, and re-checks on
        # every turn of its loop (a finished request wakes the loop).
        if self._busy >= self.cfg.threads:
            return 0
        return self._connection_limit

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._connection_limit = value

    @property
    def max_keepalived(self) -> int:
        """Connections that may be kept alive: none when under a quarter of threads are free."""
        # Read by a request's thread when it decides whether to close its connection after
        # the response. A kept-alive connection's next request must be served by this worker;
        # closed, it goes back to the listening queue and to a worker with room.
        if self.cfg.threads - self._busy < max(1, self.cfg.threads // 4):
            return 0
        return self._keepalive_limit

    @max_keepalived.setter
    def max_keepalived(self, value: int) -> None:
        self._keepalive_limit = value

    def set_accept_enabled(self, enabled: bool) -> None:
        """Stop or start accepting; when stopping for good, let go of the listening socket."""
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            # Stopping (SIGTERM, SIGHUP, SIGINT): gthread keeps its copy of the listening
            # socket open until its last request ends, so the kernel would go on queueing
            # connections nobody will accept. Closed now, new clients are refused at once
            # (nginx tries another server) while requests in progress finish.
            for listener in self.sockets:
                listener.close()

    def enqueue_req(self, conn: Any) -> None:
        """Hand a connection to the thread pool, counting the thread it takes."""
        if "close" not in vars(conn):
            # gthread closes connections through conn.close(graceful=...), on the main loop.
            conn.close = partial(self._close_connection, conn)
        self._busy += 1
        super().enqueue_req(conn)

    def finish_request(self, conn: Any, fs: Any) -> None:
        """Count the thread as free again, then let gthread keep or close the connection."""
        self._busy -= 1
        super().finish_request(conn, fs)

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        """Keep a connection only if what the application left of its body has arrived already."""
        # gthread's own waits up to 5 s for it (see the module's docstring).
        if not keepalive:
            return False
        return bool(conn.parser.finish_body(deadline=time.monotonic() + LEFTOVER_SECONDS))

    def _close_connection(self, conn: Any, graceful: bool = False) -> None:
        """Close now, or half-close and let the poller wait for the client to close its side."""
        sock = conn.sock
        if not graceful or len(self._lingering) >= LINGER_MAX:
            util.close(sock)
            return
        try:
            sock.shutdown(socket.SHUT_WR)  # the response is complete: FIN after its last byte
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, self._on_lingering_readable)
        except (OSError, ValueError, KeyError):
            util.close(sock)
            return
        self._lingering[sock] = [time.monotonic() + LINGER_SECONDS, 0]

    def _on_lingering_readable(self, sock: socket.socket) -> None:
        """Read and drop what a closing connection's client still sends; close on its close."""
        entry = self._lingering.get(sock)
        if entry is None:
            return
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return
        except OSError:
            data = b""
        entry[1] += len(data)
        if not data or entry[1] >= LINGER_BYTES:
            self._end_lingering(sock)

    def _end_lingering(self, sock: socket.socket) -> None:
        self._lingering.pop(sock, None)
        with suppress(OSError, KeyError, ValueError):
            self.poller.unregister(sock)
        util.close(sock)

    def murder_keepalived(self, *args: Any, **kwargs: Any) -> None:
        """Close idle kept-alive connections (gthread), and closing ones whose wait is over."""
        super().murder_keepalived(*args, **kwargs)
        force = bool(kwargs.get("force") or (args and args[0]))
        now = time.monotonic()
        while self._lingering:
            sock, (deadline, _) = next(iter(self._lingering.items()))
            if deadline > now and not force:
                break
            self._end_lingering(sock)


class RedactingLogger(Logger):
    """gunicorn's logger, writing JSON lines like the application, with secrets masked."""

    def setup(self, cfg: Any) -> None:
        """Set up gunicorn's handlers, then give them the server's format and filter."""
        super().setup(cfg)
        from server.config import SETTINGS_BY_KEY
        from server.logs import JsonFormatter

        setting = SETTINGS_BY_KEY["LOG_JSON"]
        raw = os.environ.get(setting.env)
        as_json = setting.default if raw is None else setting.parse(raw)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                protect(handler)
                if as_json:
                    handler.setFormatter(JsonFormatter())
