"""The end of the wait for offline entity updates held out of order, run by the server itself.

An update held in the backlog (:mod:`server.entities.records`) is applied as soon as its
predecessor arrives; when the predecessor never does, it is applied after
``MERIT_ENTITY_BACKLOG_HOURS`` on top of the latest version. Something must run for that to
happen with no request arriving: each gunicorn worker starts :func:`start` (a daemon thread
looking every ``INTERVAL_SECONDS``; two workers taking the same held record are serialised
by a row lock and the second finds it gone), and ``merit entities backlog`` does one pass by
hand (``--all`` applies every held update at once, whatever its age).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from flask import Flask

from server import db
from server.entities import records

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 600.0


def wait(app: Flask) -> dt.timedelta:
    """Return how long a held update waits for its predecessor (the setting)."""
    return dt.timedelta(hours=app.config["ENTITY_BACKLOG_HOURS"])


def run_once(app: Flask, *, everything: bool = False) -> int:
    """Apply the held updates whose wait is over (all of them with ``everything``)."""
    with app.app_context(), db.database().session() as db_session:
        older_than = dt.timedelta(0) if everything else wait(app)
        return records.process_backlog(db_session, older_than=older_than)


def start(
    app: Flask, *, interval: float = INTERVAL_SECONDS, stop: threading.Event | None = None
) -> threading.Thread:
    """Start the periodic pass in a daemon thread of this process; return the thread.

    It runs until the process ends, or until ``stop`` is set.
    """
    stop = stop or threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                taken = run_once(app)
            except Exception:  # a database away for a while: try again at the next pass
                log.warning("entity backlog pass failed", exc_info=True)
                continue
            if taken:
                log.info(
                    "held entity updates applied after the wait", extra={"fields": {"count": taken}}
                )

    thread = threading.Thread(target=loop, name="entity-backlog", daemon=True)
    thread.start()
    return thread
