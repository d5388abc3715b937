"""Operations: request buffering for slow uploads, log redaction, backups, the doctor.

``init_app`` is the extension the application factory installs: it receives request bodies
whole before the application runs (:mod:`server.ops.buffering`) and masks secrets in every log
line (:mod:`server.ops.redact`).
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Buffer request bodies and mask secrets in the logs."""
    from server.ops import buffering, redact

    redact.install()
    buffering.init_app(app)
