"""Health checks: ``/healthz`` (the process answers) and ``/readyz`` (it can do its work)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, jsonify

from server import db
from server.migrate import current_revision, head_revision
from server.storage import services as storage
from server.storage.base import StorageError

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Answer as long as the process runs; load balancers restart it otherwise."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Check the database (reachable, migrated) and the attachment store."""
    checks: dict[str, str] = {}
    ready = True
    try:
        with db.database().engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
            revision = current_revision(connection)
        if revision != head_revision():
            checks["database"] = f"not migrated (at {revision}, expected {head_revision()})"
            ready = False
        else:
            checks["database"] = "ok"
    except sa.exc.SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
        ready = False
    try:
        storage.store().check()
        checks["storage"] = "ok"
    except StorageError as exc:
        # The object store is away, but while the local spool takes attachments this server
        # still accepts records: it stays in the load balancer, and says it is degraded.
        try:
            storage.spool().check()
            checks["storage"] = f"degraded: object store unreachable ({exc}); spooling locally"
        except StorageError as spool_exc:
            checks["storage"] = f"unreachable: {exc}; spool: {spool_exc}"
            ready = False
    response = jsonify(status="ok" if ready else "unavailable", checks=checks)
    response.status_code = 200 if ready else 503
    return response
