"""gunicorn settings for field conditions, read from the same settings table as the server.

Tablets on 2G upload a photo over minutes. A sync worker would be held by each slow upload, so
a handful of tablets would block everyone. Threaded workers (gthread) give each upload a thread
that sleeps while bytes trickle in; ``MERIT_WORKERS`` x ``MERIT_THREADS`` requests are served at
once. Timeouts are generous on reads (Collect's own read timeout is 60 s per stalled write) and
graceful restarts wait for uploads in flight to finish.
"""

from server import config as _config

_settings = _config.load()

bind = f"{_settings['HOST']}:{_settings['PORT']}"
workers = _settings["WORKERS"]
worker_class = "gthread"
threads = _settings["THREADS"]
# A worker that stops reporting for this long is restarted; threads keep reporting while
# uploads trickle in, so this does not cut slow uploads.
timeout = 120
# On SIGTERM/SIGHUP, requests in flight (uploads) get this long to finish.
graceful_timeout = 300
keepalive = 75
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 16384
accesslog = None  # the application logs one JSON line per request itself
errorlog = "-"
loglevel = _settings["LOG_LEVEL"].lower()
preload_app = False
proc_name = "merit-collect"
# gunicorn 24+ opens a control socket at one fixed path per user; several servers on one
# machine (tests, a second instance) would fight over it, and nothing here uses it.
control_socket_disable = True
