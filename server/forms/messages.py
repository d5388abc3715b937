"""Translating the forms package's own messages, inside and outside a request.

Messages shown to coordinators are English msgids translated into the request's language.
Compilation also runs from the command line (``merit forms build``), where there is no request
and hence no language to choose: there they stay in English, unless the command chose one
(:func:`use_language`).
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, has_app_context, has_request_context
from flask_babel import gettext


def _(message: str, **values: Any) -> str:
    """Translate ``message`` for the current request (English outside one), then fill it."""
    if has_request_context() or (has_app_context() and g.get("locale")):
        return gettext(message, **values)
    return message % values if values else message


def use_language(language: str | None = None) -> None:
    """Choose the language of messages outside a request (commands, start-up).

    Problems render their message when raised, and the application's locale selector reads
    the request unless ``g.locale`` is set: commands set it here first.
    """
    if not has_request_context():
        g.locale = language or current_app.config["DEFAULT_LANGUAGE"]
