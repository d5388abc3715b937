"""Tablets on 2G, against a real gunicorn: slow uploads, restarts and crashes in the middle.

The server runs as ``merit serve`` runs it (gunicorn, server/gunicorn_conf.py, the default
2 workers x 32 threads). Slow tablets are raw sockets that send a record's multipart body a
kilobyte at a time, at 2 KB/s, as a phone on a weak 2G link does.

No timing threshold is asserted: the slow-upload test compares completion order (every fast
request finished while all the slow uploads were still trickling), the others what is stored.
``scripts/bench_slow_uploads.py`` prints the response times.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy as sa
from urllib3 import encode_multipart_formdata

from server.db import create_engine
from server.storage.models import Blob
from server.submissions.models import Submission, SubmissionAttachment
from tests.support import factories
from tests.support.openrosa import jpeg, new_instance_id, publish_form, record
from tests.support.servers import ServerProcess, server_env

pytestmark = pytest.mark.slow

RATE_BYTES = 1024  # sent every STEP_SECONDS: 2 KB/s
STEP_SECONDS = 0.5
PHOTO = "1715090512345.jpg"


@pytest.fixture
def field_server(database_url, tmp_path, db_session):
    """``merit serve`` with its default workers and threads, a form and an assigned tablet."""
    project = factories.project(db_session)
    app_user, token = factories.app_user(db_session, project.id)
    publish_form(db_session, project.id, app_user_ids=(app_user.actor_id,))
    env = server_env(database_url, tmp_path, WORKERS=None, THREADS=None)
    for name in ("MERIT_WORKERS", "MERIT_THREADS"):
        os.environ.pop(name, None)  # the shipped defaults, whatever the developer's shell says
    server = ServerProcess(env, log_path=tmp_path / "server.log").start()
    yield Field(server, f"/v1/key/{token}/projects/{project.id}", database_url, tmp_path)
    server.stop()


class Field:
    """A running server and what tests send to it."""

    def __init__(self, server: ServerProcess, base: str, database_url: str, tmp: Path) -> None:
        self.server = server
        self.base = base
        self.database_url = database_url
        self.tmp = tmp

    @property
    def url(self) -> str:
        return self.server.url + self.base

    def receiving(self) -> float:
        """Read how many request bodies the server is receiving now (from /metrics)."""
        text = requests.get(self.server.url + "/metrics", timeout=30).text
        match = re.search(r"^merit_http_request_bodies_receiving (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    def wait_receiving(self, count: int, timeout: float = 60) -> None:
        """Wait until ``count`` bodies are being received at once (a guard against hangs)."""
        deadline = time.monotonic() + timeout
        while (seen := self.receiving()) != count:
            assert time.monotonic() < deadline, f"{seen} bodies receiving, not {count}"
            time.sleep(0.1)

    def counts(self) -> tuple[int, int]:
        """Return the number of records and of attachments stored."""
        engine = create_engine(self.database_url, poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            result = tuple(
                connection.execute(sa.select(sa.func.count()).select_from(model)).scalar()
                for model in (Submission, SubmissionAttachment)
            )
        engine.dispose()
        return result  # type: ignore[return-value]

    def blob_hashes(self) -> set[str]:
        engine = create_engine(self.database_url, poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            found = set(connection.scalars(sa.select(Blob.sha256)))
        engine.dispose()
        return found


def upload_body(seed: int, photo_bytes: int) -> tuple[bytes, str, str]:
    """Return (body, content type, instanceID) of a record with one photo, as Collect sends it."""
    instance_id = new_instance_id()
    fields = [
        ("xml_submission_file", ("record.xml", record(instance_id, audit=None), "text/xml")),
        (PHOTO, (PHOTO, jpeg(seed, size=photo_bytes), "image/jpeg")),
    ]
    body, content_type = encode_multipart_formdata(fields)
    return body, content_type, instance_id


class Trickle(threading.Thread):
    """A tablet on 2G: one upload over a raw socket, RATE_BYTES every STEP_SECONDS."""

    def __init__(self, url: str, body: bytes, content_type: str) -> None:
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self.address = (parts.hostname, parts.port)
        self.head = (
            f"POST {parts.path}/submission?deviceID=collect%3Aslow HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\nX-OpenRosa-Version: 1.0\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self.body = body
        self.status: int | None = None
        self.finished_at: float | None = None
        self.sent = threading.Event()  # the first kilobyte is out
        self.hold = threading.Event()  # set: stop before the last byte
        self.go = threading.Event()  # set: send the rest
        self.go.set()
        self.error: BaseException | None = None
        self.sock: socket.socket | None = None

    def run(self) -> None:
        try:
            self.sock = socket.create_connection(self.address, timeout=120)
            self.sock.sendall(self.head)
            for start in range(0, len(self.body), RATE_BYTES):
                if start + RATE_BYTES >= len(self.body) and self.hold.is_set():
                    # Hold the last kilobyte until told, unless the server answers first.
                    while not self.go.wait(0.1):
                        if select.select([self.sock], [], [], 0)[0]:
                            break
                    if not self.go.is_set():
                        break
                self.sock.sendall(self.body[start : start + RATE_BYTES])
                self.sent.set()
                if start + RATE_BYTES < len(self.body):
                    time.sleep(STEP_SECONDS)
            answer = b""
            while chunk := self.sock.recv(65536):
                answer += chunk
            self.status = int(answer.split(b" ", 2)[1])
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.finished_at = time.monotonic()
            if self.sock is not None:
                self.sock.close()


def test_fast_clients_are_served_while_fifty_uploads_trickle_at_2_kb_per_second(field_server):
    # Fifty uploads of ~24 KB at 2 KB/s: each trickles for about twelve seconds.
    slow = []
    for seed in range(50):
        body, content_type, _ = upload_body(seed, photo_bytes=22_000)
        slow.append(Trickle(field_server.url, body, content_type))
    for tablet in slow:
        tablet.start()
    field_server.wait_receiving(50)  # every slow upload holds a thread now

    # Meanwhile three fast clients each list the forms and send a record, four times.
    finished: list[tuple[str, int, float]] = []
    lock = threading.Lock()

    def fast_client(number: int) -> None:
        for round_ in range(4):
            listing = requests.get(f"{field_server.url}/formList", timeout=120)
            done = time.monotonic()
            body, content_type, _ = upload_body(1000 + number * 10 + round_, photo_bytes=5_000)
            sent = requests.post(
                f"{field_server.url}/submission",
                data=body,
                headers={"Content-Type": content_type, "X-OpenRosa-Version": "1.0"},
                timeout=120,
            )
            with lock:
                finished.append(("formList", listing.status_code, done))
                finished.append(("submission", sent.status_code, time.monotonic()))

    fast = [threading.Thread(target=fast_client, args=(n,)) for n in range(3)]
    for client in fast:
        client.start()
    for client in fast:
        client.join()
    still_receiving = field_server.receiving()
    for tablet in slow:
        tablet.join(180)

    assert [t.error for t in slow if t.error] == []
    assert sorted(kind for kind, status, _ in finished if status in (200, 201)) == sorted(
        ["formList"] * 12 + ["submission"] * 12
    ), field_server.server.log()
    # None of the fast requests waited for a slow upload: all were answered before the first
    # slow upload finished, and the fifty were all still being received when the last was.
    first_slow_done = min(t.finished_at for t in slow)
    assert max(when for *_, when in finished) < first_slow_done
    assert still_receiving == 50
    # And the slow uploads themselves all got through.
    assert [t.status for t in slow] == [201] * 50, field_server.server.log()
    assert field_server.counts() == (62, 62)


def _trickling(field_server, seed: int, photo_bytes: int = 6_000) -> tuple[Trickle, str]:
    body, content_type, instance_id = upload_body(seed, photo_bytes)
    tablet = Trickle(field_server.url, body, content_type)
    tablet.hold.set()
    tablet.go.clear()
    tablet.start()
    field_server.wait_receiving(1)
    return tablet, instance_id


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_a_restart_never_cuts_an_upload_that_has_started(field_server, sig):
    tablet, _ = _trickling(field_server, seed=7)
    # gunicorn's master is the process `merit serve` became.
    os.kill(field_server.server.process.pid, sig)
    if sig == signal.SIGTERM:
        # The server stops taking connections at once, but finishes the upload it has.
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(field_server.server.url + "/healthz", timeout=2)
            except requests.ConnectionError:
                break
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.1)
    else:
        # Reloaded: new workers answer while the old one finishes the upload.
        assert requests.get(f"{field_server.url}/formList", timeout=30).status_code == 200
    tablet.go.set()
    tablet.join(60)
    assert tablet.error is None
    assert tablet.status == 201, field_server.server.log()
    assert field_server.counts() == (1, 1)
    if sig == signal.SIGTERM:
        assert field_server.server.process.wait(60) == 0  # then it exits, cleanly


def test_a_crash_in_the_middle_of_an_upload_leaves_nothing_half_stored(field_server):
    before = field_server.blob_hashes()
    tablet, instance_id = _trickling(field_server, seed=8)
    staging = field_server.tmp / "var" / "staging"
    # What a crash while a file was being staged would leave (staging takes milliseconds
    # once the body is in, too short to kill the server in it reliably).
    (staging / "stage-left-by-a-crash").write_bytes(b"half a photo")

    field_server.server.stop(signal.SIGKILL)  # the machine loses power
    tablet.go.set()
    tablet.join(30)
    assert tablet.status is None  # the tablet got no answer: Collect will send it again

    assert field_server.counts() == (0, 0)
    assert field_server.blob_hashes() == before  # only the form's media
    stored = {p.name for p in (field_server.tmp / "blobs").rglob("*") if p.is_file()}
    assert stored == before

    field_server.server.start()  # the next start cleans the staging folder
    assert [p.name for p in staging.iterdir()] == []
    # Collect sends the record again, in full: it is stored once, whole.
    body, content_type = encode_multipart_formdata(
        [
            ("xml_submission_file", ("record.xml", record(instance_id, audit=None), "text/xml")),
            (PHOTO, (PHOTO, jpeg(8, size=6_000), "image/jpeg")),
        ]
    )
    answer = requests.post(
        f"{field_server.url}/submission",
        data=body,
        headers={"Content-Type": content_type},
        timeout=60,
    )
    assert answer.status_code == 201, answer.text
    assert field_server.counts() == (1, 1)


def test_an_upload_that_stalls_is_given_up_and_frees_its_thread(database_url, tmp_path, db_session):
    project = factories.project(db_session)
    app_user, token = factories.app_user(db_session, project.id)
    publish_form(db_session, project.id, app_user_ids=(app_user.actor_id,))
    env = server_env(
        database_url,
        tmp_path,
        THREADS="2",
        UPLOAD_STALL_SECONDS="2",
    )
    with ServerProcess(env, log_path=tmp_path / "server.log") as server:
        field = Field(server, f"/v1/key/{token}/projects/{project.id}", database_url, tmp_path)
        body, content_type, _ = upload_body(9, photo_bytes=6_000)
        # Both threads taken by tablets that left coverage halfway through their upload.
        stalled = [Trickle(field.url, body, content_type) for _ in range(2)]
        for tablet in stalled:
            tablet.hold.set()
            tablet.go.clear()
            tablet.start()
        for tablet in stalled:
            tablet.join(60)  # the server closes on them after two silent seconds
        assert [t.status for t in stalled] == [408, 408]
        # The threads are free again: a tablet on a good link is served.
        answer = requests.get(f"{field.url}/formList", timeout=30)
        assert answer.status_code == 200
        assert field.counts() == (0, 0)
        assert '"status": 408' in server.log()
