"""Small helpers shared by the API's routes: timestamps, booleans in query strings, bodies."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import request

from server import bounds, errors


def iso(value: dt.datetime | None) -> str | None:
    """Format a timestamp as Central does: UTC, milliseconds, ``Z``."""
    if value is None:
        return None
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def query_bool(name: str, default: bool = False) -> bool:
    """Read a boolean query parameter; ``True``/``true``/``TRUE`` alike (pyodk sends ``True``)."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise errors.UnexpectedValue(field=name, reason="expected true or false")


def query_int(name: str, default: int | None = None, *, minimum: int = 0) -> int | None:
    """Read a whole number query parameter, ``minimum`` to :data:`server.bounds.INT_MAX`."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return bounds.whole_number(raw, minimum=minimum)
    except bounds.OutOfBounds as exc:
        raise errors.UnexpectedValue(field=name, reason=exc.reason) from None


def json_body() -> dict[str, Any]:
    """Return the request's JSON object, or raise 400.1 saying why it cannot be read."""
    data = request.get_json(silent=True, force=True)
    if not isinstance(data, dict):
        raise errors.Unparseable(format="JSON", reason="expected a JSON object")
    return data


def success() -> dict[str, bool]:
    """Central's answer to actions that return nothing else."""
    return {"success": True}
