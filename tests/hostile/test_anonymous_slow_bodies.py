"""Anonymous clients flooding the server with bodies they never finish sending (issue 16, hole 5).

The attack: clients without credentials open connections, declare a large body and send it one
byte at a time, each byte well within the stall timeout. Each held a thread for as long as it
liked, and seventy of them kept ``/healthz`` from answering. What holds now, against a real
server whose limits are lowered so that the test runs in seconds:

* a body's sender is known before the body is read: an unknown token is refused (403) at once;
* a body must keep up with a minimum rate after a grace period, whatever its pauses;
* clients without credentials have a bounded share of the threads (per address and as a whole);
  beyond it their bodies are refused unread (503, Retry-After);
* a refused client that keeps its connection open costs the server nothing while it waits;
* so health checks, signed-in users and tablets are served while the flood goes on.

Nothing here asserts a duration: clients give up after a generous time so that a failing
server fails the test instead of hanging it.
"""

from __future__ import annotations

import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from urllib3 import encode_multipart_formdata

from tests.support.site import FORM_ID, PHOTO, PHOTO_NAME, Site, household_record, start_site

pytestmark = pytest.mark.slow

# The server's limits, lowered from their defaults so that each rule shows within seconds.
LIMITS = {
    "MERIT_THREADS": "8",
    "MERIT_UPLOAD_STALL_SECONDS": "30",
    "MERIT_UPLOAD_GRACE_SECONDS": "2",
    "MERIT_UPLOAD_MIN_BYTES_PER_SECOND": "1000",
    "MERIT_ANONYMOUS_BODIES": "3",
    "MERIT_ANONYMOUS_BODIES_PER_CLIENT": "1",
}
DECLARED = 1_000_000  # what each anonymous trickler says it will send
PATIENCE = 25  # seconds a client waits for an answer before giving up (a guard, not a check)


@pytest.fixture(scope="module")
def flood_site(module_database_url, tmp_path_factory) -> Iterator[Site]:
    """A server with lowered limits, its cast, and a record from the tablet."""
    with start_site(module_database_url, tmp_path_factory.mktemp("flood"), LIMITS) as site:
        yield site


def receiving(site: Site) -> float:
    """Return how many request bodies the server is receiving now (from /metrics)."""
    text = requests.get(f"{site.url}/metrics", timeout=PATIENCE).text
    found = re.search(r"^merit_http_request_bodies_receiving (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def wait_until_receiving(site: Site, count: int) -> None:
    """Wait until the server receives exactly ``count`` bodies (a guard against hangs)."""
    deadline = time.monotonic() + PATIENCE
    while (seen := receiving(site)) != count:
        assert time.monotonic() < deadline, f"{seen} bodies being received, not {count}"
        time.sleep(0.1)


class Upload:
    """One request over a raw socket: the head, then the body a little at a time.

    ``send`` returns the answer's status as soon as the server answers, even while the body
    is still being sent: "cut" when the server closed without an answer, None when it never
    answered within PATIENCE seconds. With ``hold``, the client keeps its end of the connection
    open that long after the answer, as a hostile one does (the server closes its own end).
    """

    def __init__(
        self, site: Site, path: str, headers: dict[str, str], *, source: str, hold: float = 0
    ) -> None:
        self.hold = hold
        self.sock = socket.socket()
        self.sock.bind((source, 0))
        self.sock.settimeout(PATIENCE)
        self.sock.connect(("127.0.0.1", site.server.port))
        lines = [
            f"POST {path} HTTP/1.1",
            "Host: 127.0.0.1",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.sent = 0
        self.answer = b""

    def send(self, body: bytes, *, step: int, pause: float, stop: threading.Event | None = None):
        """Send ``step`` bytes of ``body`` every ``pause`` seconds until the server answers.

        Once ``stop`` is set, send nothing more and wait for the server's answer.
        """
        give_up = time.monotonic() + PATIENCE
        try:
            while self.sent < len(body):
                if select.select([self.sock], [], [], pause)[0]:
                    return self.status()
                if stop is not None and stop.is_set():
                    return self.wait()
                if time.monotonic() > give_up:
                    return None
                self.sock.sendall(body[self.sent : self.sent + step])
                self.sent += step
            return self.wait()
        except OSError:
            return self.status()
        finally:
            self.close()

    def wait(self) -> int | str | None:
        """Send nothing more; return the answer's status (None if none within PATIENCE)."""
        try:
            if not select.select([self.sock], [], [], PATIENCE)[0]:
                return None
            return self.status()
        finally:
            self.close()

    def close(self) -> None:
        if self.hold:
            threading.Timer(self.hold, self.sock.close).start()
        else:
            self.sock.close()

    def status(self) -> int | str | None:
        try:
            while chunk := self.sock.recv(65536):
                self.answer += chunk
                if b"\r\n\r\n" in self.answer:
                    head, _, rest = self.answer.partition(b"\r\n\r\n")
                    length = re.search(rb"(?im)^content-length: *(\d+)", head)
                    if length and len(rest) >= int(length.group(1)):
                        break
        except OSError:
            pass  # reset after (or instead of) the answer: what arrived is kept
        if not self.answer.startswith(b"HTTP/"):
            return "cut"
        return int(self.answer.split(b" ", 2)[1])


def anonymous_head(site: Site, n: int) -> tuple[str, dict[str, str]]:
    """An anonymous upload: half to the sign-in API, half to Collect's submission address."""
    if n % 2:
        return "/v1/sessions", {"Content-Type": "application/json", "Content-Length": str(DECLARED)}
    headers = {
        "Content-Type": "multipart/form-data; boundary=x",
        "Content-Length": str(DECLARED),
        "X-OpenRosa-Version": "1.0",
    }
    return f"/v1/projects/{site.project_id}/submission", headers


class Trickler(threading.Thread):
    """An anonymous client: declares a large body and sends a byte a second; once answered, it
    leaves that connection open (3 s) and opens another, until told to stop."""

    def __init__(self, site: Site, n: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.site, self.n, self.stop = site, n, stop
        self.source = f"127.0.0.{10 + n // 2}"  # two connections from each address
        self.connected = threading.Event()
        self.outcomes: list[int | str | None] = []

    def run(self) -> None:
        path, headers = anonymous_head(self.site, self.n)
        while not self.stop.is_set():
            try:
                upload = Upload(self.site, path, headers, source=self.source, hold=3)
            except OSError:
                self.outcomes.append("not accepted")
                continue
            self.connected.set()
            self.outcomes.append(upload.send(b"x" * DECLARED, step=1, pause=1.0, stop=self.stop))


def test_seventy_trickling_anonymous_bodies_leave_room_for_health_checks_users_and_tablets(
    flood_site,
):
    site = flood_site
    stop = threading.Event()
    tricklers = [Trickler(site, n, stop) for n in range(70)]
    try:
        for trickler in tricklers:
            trickler.start()
        for trickler in tricklers:
            assert trickler.connected.wait(PATIENCE)

        # While they trickle (and reconnect as soon as they are answered):
        assert requests.get(f"{site.url}/healthz", timeout=PATIENCE).status_code == 200
        assert requests.get(f"{site.url}/readyz", timeout=PATIENCE).status_code == 200
        assert requests.get(f"{site.url}/metrics", timeout=PATIENCE).status_code == 200
        by_manager = site.api("manager").post(
            f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}/submissions",
            data=household_record(f"uuid:{uuid.uuid4()}", name="Awa Traoré"),
            headers={"Content-Type": "application/xml"},
            timeout=PATIENCE,
        )
        assert by_manager.status_code == 200, by_manager.text
        by_tablet = site.submit(
            household_record(f"uuid:{uuid.uuid4()}", name="Oumou Sangaré"),
            [(PHOTO_NAME, PHOTO, "image/jpeg")],
        )
        assert by_tablet.status_code == 201, by_tablet.text
    finally:
        stop.set()  # no new connections; those open are left to the server
        for trickler in tricklers:
            trickler.join(PATIENCE + 5)

    outcomes = [outcome for trickler in tricklers for outcome in trickler.outcomes]
    # Every trickling body was refused or cut by the server, none was let through, and none was
    # still open when its client stopped sending (None).
    assert set(outcomes) <= {503, 408, "cut"}, sorted(map(str, outcomes))
    assert 503 in outcomes  # beyond the anonymous share: refused unread
    assert {408, "cut"} & set(outcomes)  # admitted, then cut for being slower than the minimum


def test_anonymous_bodies_beyond_their_share_are_refused_unread_and_users_are_not(flood_site):
    site = flood_site
    wait_until_receiving(site, 0)
    path, headers = anonymous_head(site, 1)
    slow_down = threading.Event()
    admitted: list[threading.Thread] = []
    verdicts: list[int | str | None] = []

    def keep_up(source: str) -> None:
        """An anonymous body sent fast enough to be received (2 KB/s) until told to stop."""
        upload = Upload(site, path, headers, source=source)
        thread = threading.Thread(
            target=lambda: verdicts.append(
                upload.send(b"{" * DECLARED, step=200, pause=0.1, stop=slow_down)
            ),
            daemon=True,
        )
        thread.start()
        admitted.append(thread)

    try:
        # One body from 127.0.0.100 is being received; a second from that address is refused.
        keep_up("127.0.0.100")
        wait_until_receiving(site, 1)
        second = Upload(site, path, headers, source="127.0.0.100")
        assert second.wait() == 503
        assert second.sent == 0 and b"Retry-After:" in second.answer
        assert b'"code":503' in second.answer.replace(b" ", b"")  # the API's JSON problem
        # Other addresses fill the anonymous share (three bodies at once); the next is refused.
        keep_up("127.0.0.101")
        keep_up("127.0.0.102")
        wait_until_receiving(site, 3)
        path_openrosa, headers_openrosa = anonymous_head(site, 0)
        beyond = Upload(site, path_openrosa, headers_openrosa, source="127.0.0.110")
        assert beyond.wait() == 503
        assert b"<OpenRosaResponse" in beyond.answer  # Collect's routes answer in OpenRosa
        # A signed-in user's body is received all the same.
        mine = site.api("manager").post(
            f"{site.url}/v1/projects/{site.project_id}/forms/{FORM_ID}/submissions",
            data=household_record(f"uuid:{uuid.uuid4()}", name="Salif Keïta"),
            headers={"Content-Type": "application/xml"},
            timeout=PATIENCE,
        )
        assert mine.status_code == 200, mine.text
    finally:
        slow_down.set()  # the three stop sending: slower than the minimum rate now
        for thread in admitted:
            thread.join(PATIENCE + 5)
    assert len(verdicts) == 3 and set(verdicts) <= {408, "cut"}


@pytest.mark.parametrize("route", ["openrosa", "api"])
def test_an_unknown_token_is_refused_before_its_body_is_read(flood_site, route):
    site = flood_site
    unknown = "Z" * 64
    if route == "openrosa":
        path = f"/v1/key/{unknown}/projects/{site.project_id}/submission"
        marker = b"<OpenRosaResponse"
    else:
        path = f"/v1/key/{unknown}/projects/{site.project_id}/forms/{FORM_ID}/submissions"
        marker = b'"code":403'
    headers = {"Content-Type": "application/xml", "Content-Length": str(DECLARED)}
    upload = Upload(site, path, headers, source="127.0.0.1")
    upload.sock.sendall(b"<" * 1024)
    upload.sent = 1024
    # The client has sent a kilobyte of the megabyte it declared, and waits: the server answers.
    assert upload.wait() == 403
    assert marker in upload.answer.replace(b" ", b"")
    assert upload.sent < DECLARED


def test_a_body_slower_than_the_minimum_rate_is_cut_though_it_never_stalls(flood_site):
    site = flood_site
    before = site.count("submissions")
    body, content_type = encode_multipart_formdata(
        [
            ("xml_submission_file", ("record.xml", household_record(), "text/xml")),
            (PHOTO_NAME, (PHOTO_NAME, b"\xff\xd8" + b"p" * 20_000, "image/jpeg")),
        ]
    )
    headers = {
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        "X-OpenRosa-Version": "1.0",
    }
    path = f"/v1/key/{site.tablet_token}/projects/{site.project_id}/submission"
    upload = Upload(site, path, headers, source="127.0.0.1")
    # The tablet's token is good, and a byte leaves every quarter second: never silent for
    # anything near the stall timeout (30 s), but far below the minimum rate (1000 B/s).
    status = upload.send(body, step=1, pause=0.25)
    assert status in (408, "cut")
    assert upload.sent < len(body)
    assert site.count("submissions") == before
