"""Request bodies received whole before the application runs, and secrets masked in log lines.

The buffering is checked here as a WSGI wrapper around a tiny application that records what it
was given; against gunicorn and slow sockets in tests/integration/test_slow_uploads.py.
"""

from __future__ import annotations

import io
import logging
import sys

import pytest

from server.ops.buffering import BufferedBodies
from server.ops.redact import RedactFilter, redact_text


class Recorder:
    """A WSGI application that reads its body and remembers what it saw."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read()
        self.calls.append(
            {
                "body": body,
                "length": environ.get("CONTENT_LENGTH"),
                "chunked": "HTTP_TRANSFER_ENCODING" in environ,
            }
        )
        start_response("201 Created", [("Content-Length", "0")])
        return [b""]


def call(app, body: bytes, **headers: str) -> str:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/submission", "wsgi.input": io.BytesIO(body)}
    environ.update(headers)
    statuses = []
    list(app(environ, lambda status, _headers: statuses.append(status)))
    return statuses[0]


@pytest.fixture
def recorder(tmp_path):
    inner = Recorder()
    return inner, BufferedBodies(inner, limit=1000, stall_seconds=5, directory=tmp_path)


def test_a_whole_body_reaches_the_application(recorder):
    inner, app = recorder
    assert call(app, b"x" * 600, CONTENT_LENGTH="600") == "201 Created"
    assert inner.calls == [{"body": b"x" * 600, "length": "600", "chunked": False}]


def test_a_body_cut_short_never_reaches_the_application(recorder):
    inner, app = recorder
    assert call(app, b"x" * 300, CONTENT_LENGTH="600") == "400 Bad Request"
    assert inner.calls == []


def test_a_chunked_body_is_handed_over_with_its_length(recorder):
    inner, app = recorder
    assert call(app, b"y" * 700, HTTP_TRANSFER_ENCODING="chunked") == "201 Created"
    assert inner.calls == [{"body": b"y" * 700, "length": "700", "chunked": False}]


def test_bodies_over_the_limit_are_left_to_the_application_s_413(recorder):
    inner, app = recorder
    # Declared too large: not read at all, the application refuses it from the header.
    call(app, b"z" * 10, CONTENT_LENGTH="5000")
    assert inner.calls[-1]["length"] == "5000"
    # Chunked: read one byte past the limit, so the application sees it is too large.
    call(app, b"z" * 5000, HTTP_TRANSFER_ENCODING="chunked")
    assert inner.calls[-1]["length"] == "1001"


def test_requests_without_a_body_pass_through(recorder):
    inner, app = recorder
    assert call(app, b"", CONTENT_LENGTH="") == "201 Created"
    assert call(app, b"", CONTENT_LENGTH="not a number") == "201 Created"
    assert len(inner.calls) == 2


TOKEN = "fJ3kL9$mN2pQ!rS5tU8vW1xY4zA7bC0dE6gH9iK2lM5nO8qR1sT4uV7wX0yZ3aB6c"


@pytest.mark.parametrize(
    "line",
    [
        f"Invalid request from ip=10.0.0.5: Invalid HTTP Version 'GET /v1/key/{TOKEN}/projects/1'",
        f"Error handling request GET /v1/test/{TOKEN}/projects/1/forms/f/draft/formList",
        f"GET /v1/projects/1/forms/f/submissions.csv?passphrase={TOKEN}&x=1",
        f"GET /v1/projects?token={TOKEN}",
        f"header Authorization: Bearer {TOKEN}",
        f"DELETE /v1/sessions/{TOKEN}",
        f'Authorization: Digest username="a", response="{TOKEN}"',
    ],
)
def test_secrets_are_masked_in_any_line(line):
    assert TOKEN not in redact_text(line)
    assert "***" in redact_text(line)


def test_instance_ids_and_ordinary_paths_are_left_alone():
    line = "GET /v1/projects/1/forms/menage/submissions/uuid:6f1c0e2a-1b2c-4d5e-8f90-123456789abc"
    assert redact_text(line) == line


def test_the_filter_masks_messages_arguments_and_tracebacks():
    try:
        raise ValueError(f"cannot read /v1/key/{TOKEN}/projects/1")
    except ValueError:
        record = logging.LogRecord(
            "gunicorn.error", logging.ERROR, __file__, 1, "Error handling request %s",
            (f"/v1/key/{TOKEN}/x",), sys.exc_info(),
        )  # fmt: skip
    assert RedactFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert TOKEN not in formatted
    assert "/v1/key/***/x" in formatted and "ValueError" in formatted
