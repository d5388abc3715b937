"""Masking secrets in log lines that other code formats: gunicorn's own, and error messages.

The request log (:mod:`server.logs`) never writes a token: it masks paths and keeps only the
names of query parameters. But some lines are written by code that knows nothing of that:
gunicorn logs the request line of a request it cannot parse (``Invalid request from ip=...:
Invalid HTTP Version 'GET /v1/key/<token>/...'``) and the URI of one that crashed; an
exception's message may quote a URL. This filter rewrites every such line before it is written.
"""

from __future__ import annotations

import logging
import re
import traceback

# Paths of app users (``/v1/key/<token>``) and draft testers (``/v1/test/<token>``).
_PREFIX_TOKEN = re.compile(r"(/v1/(?:key|test)/)[^/\s?'\"]+")
# Query parameters that may carry a secret (export passphrases, tokens).
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:token|access_token|st|password|passphrase|secret|key)=)[^&\s'\"]*"
)
# Credentials in an Authorization header quoted by an error message.
_BEARER_BASIC = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=!$-]{8,}")
_DIGEST = re.compile(r"(?i)\bdigest\s+[^\r\n]*")
# Any other path segment long enough to be a token (``DELETE /v1/sessions/<token>``).
_TOKEN_SEGMENT = re.compile(r"(?<=/)[A-Za-z0-9_$!-]{32,}(?=[/\s?'\"]|$)")


def redact_text(text: str) -> str:
    """Return ``text`` with tokens, passwords and passphrases replaced by ``***``."""
    text = _PREFIX_TOKEN.sub(r"\1***", text)
    text = _SECRET_PARAM.sub(r"\1***", text)
    text = _BEARER_BASIC.sub(r"\1 ***", text)
    text = _DIGEST.sub("Digest ***", text)
    return _TOKEN_SEGMENT.sub("***", text)


class RedactFilter(logging.Filter):
    """Rewrite a record's message (and its traceback) without secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record in place; never drop it."""
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[0] is not None:
            formatted = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            # The text formatter prints exc_text; the JSON one reads "exception" from fields.
            record.exc_text = redact_text(formatted)
            record.fields = {**getattr(record, "fields", {}), "exception": record.exc_text}
            record.exc_info = None
        return True


def protect(handler: logging.Handler) -> None:
    """Add the filter to a handler once."""
    if not any(isinstance(f, RedactFilter) for f in handler.filters):
        handler.addFilter(RedactFilter())


def install() -> None:
    """Protect the server's own log handlers (those :func:`server.logs.configure` added)."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_merit", False):
            protect(handler)
