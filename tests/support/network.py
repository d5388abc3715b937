"""Bad networks on loopback: an HTTP proxy that breaks requests on purpose, and a TCP gate.

:class:`FaultyProxy` stands between simulated tablets and the server, as a 2G/3G link and a
front proxy do. Each request is read whole from the tablet, then, at configurable rates:

* ``drop``: a prefix of the request reaches the server, then both connections are reset (the
  link died mid-photo); a request without body is reset before it is forwarded;
* ``stall``: the request stops halfway for a few seconds, then goes on (the tablet may give up
  meanwhile, and the server may time the body out);
* ``lose_response``: the whole request reaches the server, its whole answer is read, and the
  tablet's connection is reset instead of being given it (the record is stored; the tablet
  does not know);
* ``duplicate``: the request is sent to the server twice (at once on two connections, or one
  after the other) and the tablet gets one of the answers.

When the server cannot be reached the proxy answers 502, as nginx does. Every request goes to
the server on a new connection with ``Connection: close``, so each answer ends where the
server closes it.

:class:`TcpGate` is a plain TCP forwarder that can be closed (connections refused, those open
cut) and opened again: an object store behind it goes away and comes back.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass

HEAD_LIMIT = 64 * 1024
BAD_GATEWAY = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 50\r\n"
    b"Connection: close\r\n\r\n<html><body><h1>502 Bad Gateway</h1></body></html>"
)


@dataclass
class FaultRates:
    """Probability of each fault per request, and how long a stall lasts (seconds)."""

    drop: float = 0.0
    stall: float = 0.0
    lose_response: float = 0.0
    duplicate: float = 0.0
    stall_seconds: tuple[float, float] = (2.0, 10.0)

    def choose(self, rng: random.Random) -> str:
        """Draw the fate of one request."""
        draw = rng.random()
        for kind in ("drop", "stall", "lose_response", "duplicate"):
            rate = getattr(self, kind)
            if draw < rate:
                return kind
            draw -= rate
        return "pass"


def reset(sock: socket.socket) -> None:
    """Close a socket with a TCP reset (what a dying link looks like), not a clean FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _read_request(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """Read one HTTP request (head, body) by its Content-Length; None if the client left."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
        if len(buffer) > HEAD_LIMIT:
            return None
    head, _, body = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(min(1 << 20, length - len(body)))
        if not chunk:
            return None
        body += chunk
    return head, body[:length]


def _closing_head(head: bytes) -> bytes:
    """Rewrite a request head to ask the server to close the connection after answering."""
    lines = head.split(b"\r\n")
    kept = [
        line
        for line in lines[1:]
        if line.split(b":", 1)[0].strip().lower()
        not in (b"connection", b"keep-alive", b"proxy-connection")
    ]
    return b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n"


class FaultyProxy:
    """An HTTP proxy on loopback that drops, stalls, loses and duplicates requests."""

    def __init__(
        self,
        upstream_port: int,
        rates: FaultRates,
        *,
        port: int = 0,
        seed: int | None = None,
        upstream_timeout: float = 300.0,
    ) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.rates = rates
        self.enabled = True
        self.upstream_timeout = upstream_timeout
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(1024)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> FaultyProxy:
        """Accept connections in a background thread."""
        self._thread = threading.Thread(target=self._accept, name="faulty-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting (requests in progress finish on their own threads)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def _count(self, kind: str) -> None:
        """Add one to a counter."""
        with self._lock:
            self.counts[kind] += 1

    def _draw(self) -> tuple[str, float, float]:
        """Draw a request's fate, where in its body it strikes, and a stall's length."""
        with self._lock:
            kind = self.rates.choose(self._rng) if self.enabled else "pass"
            return kind, self._rng.random(), self._rng.uniform(*self.rates.stall_seconds)

    def _accept(self) -> None:
        """Serve each connection on a thread of its own."""
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        """Read one request, apply its fate, answer (or not)."""
        try:
            client.settimeout(self.upstream_timeout)
            request = _read_request(client)
            if request is None:
                client.close()
                return
            head, body = request
            self._count("requests")
            kind, where, stall = self._draw()
            head = _closing_head(head)
            if kind == "drop":
                self._count("drop")
                if body:
                    self._exchange(head, body, cut_at=int(len(body) * where))
                reset(client)
                return
            if kind == "lose_response":
                self._count("lose_response")
                self._exchange(head, body)
                reset(client)
                return
            if kind == "duplicate":
                self._count("duplicate")
                answer = self._twice(head, body, concurrent=where < 0.5)
            elif kind == "stall":
                self._count("stall")
                answer = self._exchange(head, body, stall_at=int(len(body) * where), stall=stall)
            else:
                answer = self._exchange(head, body)
            if answer is None:
                self._count("bad_gateway")
                answer = BAD_GATEWAY
            with contextlib.suppress(OSError):
                client.sendall(answer)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)
            client.close()
        except OSError:
            reset(client)

    def _twice(self, head: bytes, body: bytes, *, concurrent: bool) -> bytes | None:
        """Send a request to the server two times; return one of the answers."""
        answers: list[bytes | None] = [None, None]
        if concurrent:

            def send(index: int) -> None:
                """Send one of the two copies."""
                answers[index] = self._exchange(head, body)

            threads = [threading.Thread(target=send, args=(i,)) for i in (0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            answers = [self._exchange(head, body), self._exchange(head, body)]
        usable = [a for a in answers if a]
        return self._rng.choice(usable) if usable else None

    def _exchange(
        self,
        head: bytes,
        body: bytes,
        *,
        cut_at: int | None = None,
        stall_at: int | None = None,
        stall: float = 0.0,
    ) -> bytes | None:
        """Send one request to the server on a new connection; return its whole answer.

        None when the server cannot be reached or answered nothing (the caller says 502).
        """
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            return None
        try:
            upstream.settimeout(self.upstream_timeout)
            if cut_at is not None:
                upstream.sendall(head + body[:cut_at])
                time.sleep(0.05)  # let the server see the bytes before the reset
                reset(upstream)
                return None
            if stall_at is not None:
                upstream.sendall(head + body[:stall_at])
                time.sleep(stall)
                upstream.sendall(body[stall_at:])
            else:
                upstream.sendall(head + body)
            chunks = []
            while chunk := upstream.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks) or None
        except OSError:
            return None
        finally:
            with contextlib.suppress(OSError):
                upstream.close()


class TcpGate:
    """A TCP forwarder on a fixed port that can be closed and opened again."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port = port
        self.target = ("127.0.0.1", target_port)
        self._listener: socket.socket | None = None
        self._open_sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """Tell whether the gate accepts connections."""
        return self._listener is not None

    def open(self) -> TcpGate:
        """Listen again: connections reach the target."""
        if self._listener is not None:
            return self
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(512)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def close(self) -> None:
        """Refuse new connections and cut the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()
        with self._lock:
            sockets, self._open_sockets = self._open_sockets, set()
        for sock in sockets:
            reset(sock)

    def _accept(self, listener: socket.socket) -> None:
        """Relay each connection to the target while the gate is open."""
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:
                reset(client)
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open_sockets.update((client, server))
            threading.Thread(target=self._relay, args=(client, server), daemon=True).start()

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        """Copy both ways until both sides are done, then close both."""
        upward = threading.Thread(target=_pump, args=(client, server), daemon=True)
        upward.start()
        _pump(server, client)
        upward.join()
        with self._lock:
            self._open_sockets.difference_update((client, server))
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy one direction of a TCP connection; reset both sides if either fails."""
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
    except OSError:
        reset(sink)
        reset(source)
