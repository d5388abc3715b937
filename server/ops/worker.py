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

:class:`RedactingLogger` writes gunicorn's own lines as JSON (like the application's) and masks
tokens in them (:mod:`server.ops.redact`).
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from server.ops.redact import protect


class FieldWorker(ThreadWorker):
    """gthread that accepts a connection only when a thread is free to serve it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Requests handed to the thread pool and not finished. Changed only on the main
        # thread (accept, poller callbacks, and completions run there through gthread's
        # method queue), so it needs no lock.
        self._busy = 0
        self._connection_limit = 0
        self._keepalive_limit = 0
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
        self._busy += 1
        super().enqueue_req(conn)

    def finish_request(self, conn: Any, fs: Any) -> None:
        """Count the thread as free again, then let gthread keep or close the connection."""
        self._busy -= 1
        super().finish_request(conn, fs)


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
