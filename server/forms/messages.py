"""Translating the forms package's own messages, inside and outside the application.

Messages shown to coordinators are English msgids, translated into the language of the
request (or the server's default language in commands run with the application). The build
(``merit forms build``) runs without the application: there they stay in English.
"""

from __future__ import annotations

from typing import Any

from flask import has_app_context
from flask_babel import gettext


def _(message: str, **values: Any) -> str:
    """Translate ``message`` when the application is there (English otherwise), then fill it."""
    if has_app_context():
        return gettext(message, **values)
    return message % values if values else message
