"""gunicorn settings for field conditions, read from the same settings table as the server.

``merit serve`` runs gunicorn with this file, on a laptop and in the Docker image alike.

Tablets on 2G upload a photo over minutes. The choices, and why:

* **Threaded workers** (gthread, as :class:`server.ops.worker.FieldWorker`). A sync worker is
  held by each slow upload, so a handful of tablets would block everyone. An async worker
  (gevent) would make every waiting socket free, but SQLite's lock waits, fsync'd staging and
  boto3 calls block its single thread, stalling every request of the worker at once. Threads
  keep blocking code safe: each upload takes a thread that sleeps while bytes trickle in,
  ``MERIT_WORKERS`` x ``MERIT_THREADS`` requests at once (2 x 32 by default).
* **Bodies received before the view runs, once the sender is known**
  (:mod:`server.ops.buffering`): a trickling upload holds its thread, but no database
  connection and no SQLite lock, so fast requests are never queued behind it; a body that
  stalls for ``MERIT_UPLOAD_STALL_SECONDS``, or falls below the minimum rate, is given up; a
  body cut short is never stored; a bad token is refused before its body is read, and clients
  without credentials get only a share of the threads for their bodies.
* **A worker takes a connection only when it has a free thread** (FieldWorker): fast clients
  are never parked behind uploads on a full worker while another has room.
* **Behind nginx** (docker/), the proxy receives bodies itself (``proxy_request_buffering``)
  and hands them over at local speed: slow links then cost gunicorn nothing at all.
* **Timeouts.** ``timeout`` only restarts a worker whose main loop stops answering; gthread's
  loop keeps answering while threads wait on slow sockets, so it never cuts an upload.
  ``graceful_timeout``: on SIGTERM (stop) or SIGHUP (reload), a worker stops accepting and
  finishes the requests it has for up to five minutes, enough for a 3 MB photo at 10 KB/s.
  Docker must wait longer than that before it kills (``stop_grace_period`` in the compose
  file). ``keepalive`` outlasts nginx's upstream keepalive (60 s), so the proxy, not
  gunicorn, closes idle connections and never sends a request on one being closed.
* **Limits.** Request lines and headers are bounded here; bodies by ``MERIT_MAX_UPLOAD_BYTES``
  in the application (and ``client_max_body_size`` in nginx, set a little above it so that
  Collect gets the application's readable 413, not nginx's HTML page), and in time and number
  by :mod:`server.ops.buffering` (minimum rate, share of anonymous clients).
* **Forwarded headers** (``X-Forwarded-Proto``, ``-For``...) are believed in one place only: the
  application's ProxyFix, from as many proxies as ``MERIT_TRUST_PROXY`` says (none by default).
  gunicorn would otherwise believe ``X-Forwarded-Proto: https`` from any client on 127.0.0.1
  (its default ``forwarded_allow_ips``), so that Basic authentication, accepted over HTTPS
  only, would be taken over plain HTTP from a local process.

At start (``on_starting``, in the master process, before any worker) the staging folder is
emptied, since files in it only belong to requests in progress and a crash may have left some,
and so is the Prometheus folder through which the workers share their metrics. Each worker,
once it has loaded the application, starts the periodic pass that applies held offline entity
updates whose wait is over (``MERIT_ENTITY_BACKLOG_HOURS``).
"""

import os
import shutil
from pathlib import Path

from server import config as _config
from server import files as _files

# What gunicorn and the libraries it loads create is private too (merit serve already set it;
# gunicorn may also be started directly). Files the server writes are made private one by one.
_files.restrict_umask()
_settings = _config.load()
_data_dir = Path(_settings["DATA_DIR"])
_metrics_dir = _data_dir / "prometheus"
# prometheus_client chooses where values live when it is first imported; workers import it
# after the fork, with this already set.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)

bind = f"{_settings['HOST']}:{_settings['PORT']}"
workers = _settings["WORKERS"]
worker_class = "server.ops.worker.FieldWorker"
threads = _settings["THREADS"]
worker_connections = 1000
timeout = 120
graceful_timeout = 300
keepalive = 75
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 16384
forwarded_allow_ips = ""  # no one: ProxyFix (server/app.py) reads forwarded headers
secure_scheme_headers: dict[str, str] = {}
accesslog = None  # the application logs one JSON line per request itself
errorlog = "-"
loglevel = _settings["LOG_LEVEL"].lower()
logger_class = "server.ops.worker.RedactingLogger"
preload_app = False
proc_name = "merit-collect"
# gunicorn 24+ opens a control socket at one fixed path per user; several servers on one
# machine (tests, a second instance) would fight over it, and nothing here uses it.
control_socket_disable = True


def on_starting(server) -> None:
    """Empty the staging and metrics folders before the first worker starts."""
    staging = _data_dir / "staging"
    if staging.is_dir():
        for leftover in staging.iterdir():
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
    if _metrics_dir.exists():
        shutil.rmtree(_metrics_dir)
    _files.private_dir(_metrics_dir)


def post_worker_init(worker) -> None:
    """Start the worker's periodic pass over held entity updates (server/entities/backlog.py)."""
    from server.entities import backlog

    backlog.start(worker.wsgi)


def child_exit(server, worker) -> None:
    """Forget a dead worker's live gauges; its counters stay in the totals."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
