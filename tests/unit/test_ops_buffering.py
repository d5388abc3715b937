"""Request bodies received whole, within their bounds, and secrets masked in log lines.

The receiving is checked here on :class:`Bodies` alone, with bodies in memory or on a socket
pair (the peer plays the client); with the application and its authentication in
tests/hostile/test_anonymous_slow_bodies.py, and against gunicorn and slow sockets in
tests/integration/test_slow_uploads.py.
"""

from __future__ import annotations

import io
import logging
import socket
import sys
import threading
import time

import pytest

from server import errors
from server.ops.buffering import Admission, Bodies, client_key
from server.ops.redact import RedactFilter, redact_text

SETTINGS = {
    "MAX_UPLOAD_BYTES": 1000,
    "UPLOAD_STALL_SECONDS": 5,
    "UPLOAD_GRACE_SECONDS": 60,
    "UPLOAD_MIN_BYTES_PER_SECOND": 500,
    "ANONYMOUS_BODIES": 2,
    "ANONYMOUS_BODIES_PER_CLIENT": 1,
}


def bodies(tmp_path, **settings) -> Bodies:
    return Bodies({**SETTINGS, **settings}, tmp_path, release=lambda: None)


def environ(body: bytes, **headers: str) -> dict:
    return {"REQUEST_METHOD": "POST", "wsgi.input": io.BytesIO(body), **headers}


def test_a_whole_body_is_handed_over_in_a_file(tmp_path):
    request = environ(b"x" * 600, CONTENT_LENGTH="600")
    bodies(tmp_path).receive(request, address="10.0.0.5", signed_in=True)
    assert request["wsgi.input"].read() == b"x" * 600
    assert request["CONTENT_LENGTH"] == "600"


def test_a_body_cut_short_is_refused(tmp_path):
    request = environ(b"x" * 300, CONTENT_LENGTH="600")
    with pytest.raises(errors.BadRequest):
        bodies(tmp_path).receive(request, address="10.0.0.5", signed_in=True)


def test_a_chunked_body_is_handed_over_with_its_length(tmp_path):
    request = environ(b"y" * 700, HTTP_TRANSFER_ENCODING="chunked")
    bodies(tmp_path).receive(request, address="10.0.0.5", signed_in=True)
    assert request["wsgi.input"].read() == b"y" * 700
    assert request["CONTENT_LENGTH"] == "700" and "HTTP_TRANSFER_ENCODING" not in request


def test_bodies_over_the_limit_are_left_to_the_view_s_413(tmp_path):
    # Declared too large: not read at all, the view refuses it from the header.
    declared = environ(b"z" * 10, CONTENT_LENGTH="5000")
    bodies(tmp_path).receive(declared, address="10.0.0.5", signed_in=True)
    assert declared["CONTENT_LENGTH"] == "5000" and declared["wsgi.input"].read() == b"z" * 10
    # Chunked: read one byte past the limit, so the view sees it is too large.
    chunked = environ(b"z" * 5000, HTTP_TRANSFER_ENCODING="chunked")
    bodies(tmp_path).receive(chunked, address="10.0.0.5", signed_in=True)
    assert chunked["CONTENT_LENGTH"] == "1001"


def test_requests_without_a_body_pass_through(tmp_path):
    for length in ("", "not a number", "0"):
        request = environ(b"", CONTENT_LENGTH=length)
        bodies(tmp_path).receive(request, address="10.0.0.5", signed_in=False)
        assert request["CONTENT_LENGTH"] == length


def test_a_body_is_received_once(tmp_path):
    request = environ(b"x" * 10, CONTENT_LENGTH="10")
    receiver = bodies(tmp_path)
    receiver.receive(request, address="10.0.0.5", signed_in=True)
    handed_over = request["wsgi.input"]
    receiver.receive(request, address="10.0.0.5", signed_in=True)
    assert request["wsgi.input"] is handed_over


def test_the_transaction_is_ended_before_waiting_for_bytes(tmp_path):
    ended = []
    receiver = Bodies(SETTINGS, tmp_path, release=lambda: ended.append(True))
    receiver.receive(environ(b"x", CONTENT_LENGTH="1"), address="10.0.0.5", signed_in=True)
    assert ended == [True]


def test_anonymous_bodies_have_a_share_per_client_and_in_all():
    admission = Admission(anonymous=2, per_client=1)

    def refused(address: str) -> errors.UploadsBusy:
        with pytest.raises(errors.UploadsBusy) as caught, admission.anonymous_body(address):
            pass
        return caught.value

    with admission.anonymous_body("10.0.0.5"):
        same_client = refused("10.0.0.5")
        assert same_client.status == 503 and same_client.headers["Retry-After"]
        with admission.anonymous_body("10.0.0.6"):
            refused("10.0.0.7")  # a new client, but the share of all is taken
    # Once received, their room is free again.
    with admission.anonymous_body("10.0.0.5"), admission.anonymous_body("10.0.0.7"):
        pass


def test_signed_in_bodies_are_not_counted(tmp_path):
    receiver = bodies(tmp_path, ANONYMOUS_BODIES=1)
    with receiver.admission.anonymous_body("10.0.0.5"):
        request = environ(b"x" * 10, CONTENT_LENGTH="10")
        receiver.receive(request, address="10.0.0.5", signed_in=True)
        with pytest.raises(errors.UploadsBusy):
            receiver.receive(environ(b"x", CONTENT_LENGTH="1"), address="10.0.0.9", signed_in=False)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        (None, "unknown"),
    ],
)
def test_a_client_is_an_ipv4_address_or_an_ipv6_subscriber_network(address, key):
    assert client_key(address) == key


class Peer:
    """The client end of a socket pair: sends ``data`` ``step`` bytes every ``pause`` seconds."""

    def __init__(self, data: bytes, step: int, pause: float) -> None:
        self.server, self.client = socket.socketpair()
        self.data, self.step, self.pause = data, step, pause
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self) -> None:
        try:
            for start in range(0, len(self.data), self.step):
                self.client.sendall(self.data[start : start + self.step])
                time.sleep(self.pause)
        except OSError:
            pass  # the server shut its side

    def environ(self) -> dict:
        return {
            "REQUEST_METHOD": "POST",
            "CONTENT_LENGTH": str(len(self.data)),
            "wsgi.input": self.server.makefile("rb"),
            "gunicorn.socket": self.server,
        }

    def close(self) -> None:
        self.client.close()
        self.server.close()


def test_a_body_slower_than_the_minimum_rate_is_cut_though_it_never_stalls(tmp_path):
    # 10 B/s, never silent for more than a tenth of a second (the stall timeout is 5 s), far
    # below the minimum (500 B/s once the grace second has passed).
    peer = Peer(b"s" * 900, step=1, pause=0.1)
    try:
        receiver = bodies(tmp_path, UPLOAD_GRACE_SECONDS=1)
        with pytest.raises(errors.UploadTooSlow):
            receiver.receive(peer.environ(), address="10.0.0.5", signed_in=True)
    finally:
        peer.close()


def test_a_body_that_keeps_up_with_the_minimum_rate_is_received(tmp_path):
    # 2 KB/s, four times the minimum (the 2G tablet of the settings' docstring).
    peer = Peer(b"f" * 900, step=100, pause=0.05)
    try:
        request = peer.environ()
        bodies(tmp_path, UPLOAD_GRACE_SECONDS=0).receive(
            request, address="10.0.0.5", signed_in=True
        )
        assert request["wsgi.input"].read() == b"f" * 900
    finally:
        peer.close()


def test_a_body_that_stalls_is_given_up(tmp_path):
    peer = Peer(b"p" * 10, step=10, pause=0)  # then silence
    try:
        request = {**peer.environ(), "CONTENT_LENGTH": "900"}
        with pytest.raises(errors.UploadTooSlow):
            bodies(tmp_path, UPLOAD_STALL_SECONDS=0.3).receive(
                request, address="10.0.0.5", signed_in=True
            )
    finally:
        peer.close()


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
