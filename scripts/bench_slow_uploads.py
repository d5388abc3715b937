"""Benchmark: do fast clients stay fast while tablets on 2G trickle their uploads in?

    .venv/bin/python scripts/bench_slow_uploads.py                   # SQLite, 50 slow tablets
    .venv/bin/python scripts/bench_slow_uploads.py --postgresql      # a scratch PostgreSQL db
    .venv/bin/python scripts/bench_slow_uploads.py --contrast        # also the old setup
    .venv/bin/python scripts/bench_slow_uploads.py --photo-bytes 3000000   # the real 3 MB (25 min)
    .venv/bin/python scripts/bench_slow_uploads.py --anonymous 70    # and an anonymous flood

It starts gunicorn exactly as ``merit serve`` does (server/gunicorn_conf.py, the default 2
workers x 32 threads, unless --workers/--threads say otherwise), publishes a small form with a
photo question, then measures a few fast clients (each in a loop: list the forms, send a record
with a 5 KB photo) twice in the same run:

1. baseline: nothing else going on;
2. trickle: while 50 tablets each upload a record with a photo at 2 KB/s (raw sockets sending
   a kilobyte every half second, as a phone on a weak 2G link does).

With ``--anonymous N``, the trickle phase also has N clients without credentials that each
declare a 1 MB body and send it a byte every 10 s, reconnecting as soon as they are answered
(issue 16), and a health check is timed every half second.

It prints the fast clients' response times (p50, p95, max) in both phases, and what became of
the slow uploads. ``--contrast`` runs the same against the setup this server had before issue
10 (stock gthread worker, the application reading bodies itself) to show what the choices
buy. Nothing is asserted; tests/integration/test_slow_uploads.py checks the ordering in CI,
tests/hostile/test_anonymous_slow_bodies.py the flood.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from urllib3 import encode_multipart_formdata  # noqa: E402

from server import migrate  # noqa: E402

SECRET = "benchmark-secret-key"  # noqa: S105 - a scratch server, removed at the end
PHOTO = "1715090512345.jpg"
ADMIN_PG = os.environ.get("MERIT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


# ---- the WSGI application of the contrast run -------------------------------------------------


def application_factory():
    """The server as gunicorn serves it; in contrast mode without the body buffering."""
    from server.wsgi import app

    if os.environ.get("BENCH_UNBUFFERED") == "1":
        # Take the receiving step out: the views then read bodies themselves, as they did.
        import flask

        from server.ops.buffering import receive_body

        app.before_request_funcs[None].remove(receive_body)
        app.request_class = flask.Request
    return app


# ---- set-up -----------------------------------------------------------------------------------


def prepare(database_url: str, data_dir: Path) -> str:
    """Migrate, create a project, a tablet and a published form; return the tablet's base path."""
    from server import db
    from server.app import create_app
    from server.auth.roles import sync_roles
    from tests.support import factories
    from tests.support.openrosa import publish_form

    migrate.upgrade(database_url)
    app = create_app(
        {
            "DATABASE_URL": database_url,
            "DATA_DIR": str(data_dir),
            "SECRET_KEY": SECRET,
            "FORMS_DIR": str(data_dir / "no-forms"),
        }
    )
    with app.app_context(), db.database().session() as db_session:
        sync_roles(db_session)
        db_session.commit()
        project = factories.project(db_session)
        app_user, token = factories.app_user(db_session, project.id, secret_key=SECRET)
        publish_form(db_session, project.id, app_user_ids=(app_user.actor_id,))
        base = f"/v1/key/{token}/projects/{project.id}"
    app.extensions["merit.db"].dispose()
    return base


def scratch_postgresql() -> tuple[str, callable]:
    """Create a scratch PostgreSQL database; return its URL and a function that drops it."""
    admin = sa.engine.make_url(ADMIN_PG.replace("postgresql://", "postgresql+psycopg://"))
    name = f"merit_bench_slow_{secrets.token_hex(4)}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with engine.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    return url.replace("postgresql+psycopg://", "postgresql://"), drop


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(
    database_url: str, data_dir: Path, port: int, args: argparse.Namespace, *, contrast: bool
) -> subprocess.Popen:
    """Start gunicorn with the server's own configuration file; wait until it answers."""
    env = {
        **os.environ,
        "MERIT_DATABASE_URL": database_url,
        "MERIT_DATA_DIR": str(data_dir),
        "MERIT_PORT": str(port),
        "MERIT_WORKERS": str(args.workers),
        "MERIT_THREADS": str(args.threads),
        "MERIT_LOG_LEVEL": "WARNING",
        "MERIT_SECRET_KEY": SECRET,
        "MERIT_FORMS_DIR": str(data_dir / "no-forms"),
        "BENCH_UNBUFFERED": "1" if contrast else "0",
    }
    command = [str(Path(sys.executable).with_name("gunicorn"))]
    command += ["--config", str(ROOT / "server" / "gunicorn_conf.py")]
    if contrast:
        command += ["--worker-class", "gthread"]
    command += ["--pythonpath", str(ROOT / "scripts"), "bench_slow_uploads:application_factory()"]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return process
        except requests.RequestException:
            time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError("server did not start")


def stop_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# ---- clients ----------------------------------------------------------------------------------


def record_body(seed: int, photo_bytes: int) -> tuple[bytes, str]:
    """A record with one photo, as ODK Collect posts it."""
    from tests.support.openrosa import jpeg, new_instance_id, record

    xml = record(new_instance_id(), audit=None)
    return encode_multipart_formdata(
        [
            ("xml_submission_file", ("record.xml", xml, "text/xml")),
            (PHOTO, (PHOTO, jpeg(seed, size=photo_bytes), "image/jpeg")),
        ]
    )


class SlowTablet(threading.Thread):
    """One upload over a raw socket, ``rate`` bytes per second in half-second steps."""

    def __init__(self, port: int, path: str, body: bytes, content_type: str, rate: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.head = (
            f"POST {path}/submission?deviceID=collect%3Abench HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"X-OpenRosa-Version: 1.0\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.body = body
        self.step = max(1, rate // 2)
        self.started = threading.Event()
        self.status: int | None = None
        self.seconds: float | None = None
        self.error: str | None = None

    def run(self) -> None:
        began = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=600) as sock:
                sock.sendall(self.head)
                for start in range(0, len(self.body), self.step):
                    sock.sendall(self.body[start : start + self.step])
                    self.started.set()
                    last = start + self.step >= len(self.body)
                    # Wait half a second, or stop early if the server has answered (an error).
                    if not last and select.select([sock], [], [], 0.5)[0]:
                        break
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
                self.status = int(answer.split(b" ", 2)[1]) if answer else None
        except OSError as exc:
            self.error = type(exc).__name__
        finally:
            self.started.set()
            self.seconds = time.monotonic() - began


class AnonymousFlood(threading.Thread):
    """A client without credentials: declares 1 MB, sends a byte every 10 s, reconnects."""

    def __init__(self, port: int, source: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.source, self.stop = port, source, stop
        self.head = (
            b"POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n"
        )
        self.answers: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with socket.socket() as sock:
                    sock.bind((self.source, 0))
                    sock.connect(("127.0.0.1", self.port))
                    sock.sendall(self.head)
                    while not self.stop.is_set():
                        if select.select([sock], [], [], 10)[0]:
                            answer = sock.recv(64)
                            self.answers.append(
                                answer.split(b" ", 2)[1].decode() if answer else "cut"
                            )
                            break
                        sock.sendall(b"{")
            except OSError as exc:
                self.answers.append(type(exc).__name__)
                time.sleep(0.1)


def probe_health(port: int, stop: threading.Event, samples: list[tuple[float, int | None]]) -> None:
    """Time GET /healthz every half second until ``stop`` (30 s timeout each)."""
    while not stop.is_set():
        began = time.perf_counter()
        try:
            status = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code
        except requests.RequestException:
            status = None
        samples.append((time.perf_counter() - began, status))
        stop.wait(0.5)


def fast_load(
    url: str, clients: int, seconds: float, photo_bytes: int
) -> dict[str, list[tuple[float, int | None]]]:
    """Run ``clients`` loops of (form list, record) for ``seconds``; return latencies by kind."""
    results: dict[str, list[tuple[float, int | None]]] = {"formList": [], "submission": []}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def timed(kind: str, call) -> None:
        began = time.perf_counter()
        try:
            status = call().status_code
        except requests.RequestException:
            status = None
        with lock:
            results[kind].append((time.perf_counter() - began, status))

    def loop(number: int) -> None:
        seed = number * 1_000_000
        while time.monotonic() < stop:
            timed("formList", lambda: requests.get(f"{url}/formList", timeout=120))
            seed += 1
            body, content_type = record_body(seed, photo_bytes)
            timed(
                "submission",
                lambda b=body, c=content_type: requests.post(
                    f"{url}/submission", data=b, headers={"Content-Type": c}, timeout=120
                ),
            )

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def receiving(port: int) -> float | None:
    """Bodies the server is receiving now, from /metrics (None when it does not say)."""
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    except requests.RequestException:
        return None
    match = re.search(r"^merit_http_request_bodies_receiving (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def summary(label: str, samples: list[tuple[float, int | None]]) -> str:
    """One line: count, errors, p50, p95, max in milliseconds."""
    good = sorted(t * 1000 for t, status in samples if status in (200, 201))
    errors = len(samples) - len(good)
    if not good:
        return f"  {label:<34} {len(samples):>5} {errors:>6}        -        -        -"
    p95 = good[min(len(good) - 1, int(len(good) * 0.95))]
    return (
        f"  {label:<34} {len(samples):>5} {errors:>6} {statistics.median(good):>8.0f} "
        f"{p95:>8.0f} {good[-1]:>8.0f}"
    )


def run(args: argparse.Namespace, *, contrast: bool) -> None:
    """Measure one server configuration: baseline, then during the trickle."""
    with tempfile.TemporaryDirectory(prefix="merit-bench-slow-") as scratch:
        data_dir = Path(scratch) / "var"
        drop = None
        if args.postgresql:
            database_url, drop = scratch_postgresql()
        else:
            database_url = f"sqlite:///{Path(scratch) / 'merit.db'}"
        try:
            base = prepare(database_url, data_dir)
            port = free_port()
            process = start_server(database_url, data_dir, port, args, contrast=contrast)
            url = f"http://127.0.0.1:{port}{base}"
            try:
                measure(args, port, base, url, contrast=contrast, database_url=database_url)
            finally:
                stop_server(process)
        finally:
            if drop:
                drop()


def measure(
    args: argparse.Namespace, port: int, base: str, url: str, *, contrast: bool, database_url: str
) -> None:
    kind = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    if contrast:
        setup = "stock gthread, the application reading bodies itself (before issue 10)"
    else:
        setup = "FieldWorker, bodies received before the view runs"
    print(f"\n{args.workers} workers x {args.threads} threads, {setup}, {kind}")
    fast_load(url, 1, 1.0, args.fast_photo_bytes)  # warm up: imports, caches, connections
    baseline = fast_load(url, args.fast_clients, args.seconds, args.fast_photo_bytes)

    tablets = []
    for seed in range(args.slow):
        body, content_type = record_body(10_000_000 + seed, args.photo_bytes)
        tablets.append(SlowTablet(port, base, body, content_type, args.rate))
    for tablet in tablets:
        tablet.start()
    for tablet in tablets:
        tablet.started.wait()
    deadline = time.monotonic() + 30
    while not contrast and time.monotonic() < deadline:
        if receiving(port) == args.slow:
            break
        time.sleep(0.2)
    stop_flood = threading.Event()
    flood = [
        AnonymousFlood(port, f"127.0.0.{10 + n // 2}", stop_flood) for n in range(args.anonymous)
    ]
    health: list[tuple[float, int | None]] = []
    for client in flood:
        client.start()
    if flood:
        threading.Thread(target=probe_health, args=(port, stop_flood, health), daemon=True).start()
    time.sleep(1.0)  # every slow tablet has sent its headers and first bytes
    during = fast_load(url, args.fast_clients, args.seconds, args.fast_photo_bytes)
    still = None if contrast else receiving(port)
    stop_flood.set()
    for tablet in tablets:
        tablet.join()

    print(
        f"  {'fast clients':<34} {'reqs':>5} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'max ms':>8}"
    )
    print(summary("form list, alone", baseline["formList"]))
    print(summary(f"form list, {args.slow} uploads trickling", during["formList"]))
    print(summary("record + 5 KB photo, alone", baseline["submission"]))
    print(summary(f"record + 5 KB photo, {args.slow} trickling", during["submission"]))
    ok = sum(1 for t in tablets if t.status == 201)
    took = sorted(t.seconds for t in tablets if t.seconds is not None)
    line = f"  slow uploads ({args.photo_bytes // 1000} KB at {args.rate // 1024} KB/s): "
    line += f"{ok} of {args.slow} answered 201, in {took[0]:.0f}-{took[-1]:.0f} s"
    others = sorted({str(t.status or t.error) for t in tablets if t.status != 201})
    if others:
        line += f"; others: {', '.join(others)}"
    print(line)
    if still is not None:
        print(f"  bodies still being received when the fast clients stopped: {still:.0f}")
    if flood:
        print(summary(f"health check, {args.anonymous} anonymous", health))
        answers: dict[str, int] = {}
        for client in flood:
            for answer in client.answers:
                answers[answer] = answers.get(answer, 0) + 1
        told = ", ".join(f"{n} x {answer}" for answer, n in sorted(answers.items())) or "none"
        print(f"  anonymous flood ({args.anonymous} clients, a byte every 10 s): answers {told}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=50, help="tablets trickling (50)")
    parser.add_argument("--rate", type=int, default=2048, help="bytes per second each (2048)")
    parser.add_argument(
        "--photo-bytes", type=int, default=60_000, help="photo size of each slow upload (60 KB)"
    )
    parser.add_argument("--fast-clients", type=int, default=4, help="fast clients (4)")
    parser.add_argument("--fast-photo-bytes", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=15, help="length of each phase (15)")
    parser.add_argument(
        "--anonymous", type=int, default=0, help="anonymous clients flooding meanwhile (0)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--postgresql", action="store_true", help="scratch PostgreSQL database")
    parser.add_argument(
        "--contrast", action="store_true", help="also run the setup before issue 10"
    )
    args = parser.parse_args()
    print(
        f"{args.slow} slow tablets, each a {args.photo_bytes // 1000} KB photo at "
        f"{args.rate} B/s; {args.fast_clients} fast clients, {args.seconds:.0f} s per phase; "
        f"{os.cpu_count()} CPUs (clients and server share them)"
    )
    run(args, contrast=False)
    if args.contrast:
        run(args, contrast=True)


if __name__ == "__main__":
    main()
