"""Benchmark of record intake: records per second through gunicorn on PostgreSQL.

    .venv/bin/python scripts/bench_intake.py                      # empty database
    .venv/bin/python scripts/bench_intake.py --preload 1000000    # empty, then a million records
    .venv/bin/python scripts/bench_intake.py --storage s3://bucket/prefix   # attachments in S3
    .venv/bin/python scripts/bench_intake.py --against main       # this tree against another

It starts the server as production does (gunicorn, gthread workers) on a scratch PostgreSQL
database, publishes a form of about sixty questions (a record is about 5 KB of XML), and sends
records the way ODK Collect does (multipart POST with an app-user token), at concurrency 1, 4
and 16, without attachment and with a 200 KB photo. In the same run and the same server, a
bare endpoint that only reads the request body gives the baseline: the ratio says what intake
costs beyond HTTP itself. The server's CPU time (every gunicorn process, read from /proc) is
divided by the records sent: CPU milliseconds per record, the figure machine load disturbs
least. Figures are printed; nothing is asserted.

With ``--against REV`` a second server runs the code of another commit (a temporary git
worktree of REV, same virtualenv, its own scratch database prepared by this tree: the two must
share their migrations), and every cell is measured on both, one after the other, in the same
run: the ratio of CPU per record says what a change costs or saves.

The client is a lean one (pre-built requests on keep-alive sockets) so that most of the two
cores go to the server; client and server still share the machine, as they share it for the
baseline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The tree whose server this process runs: another commit's under --against.
sys.path.insert(0, os.environ.get("MERIT_BENCH_SOURCE") or str(ROOT))

import sqlalchemy as sa  # noqa: E402

from server import migrate  # noqa: E402
from server.db import create_engine  # noqa: E402

ADMIN_PG = os.environ.get("MERIT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
FORM_ID = "bench_form"
VERSION = "1"
BARE_PATH = "/__bench/bare"
SECRET = "benchmark-secret-key"  # noqa: S105 - a scratch database, dropped at the end


# ---- the WSGI application gunicorn serves in benchmark mode ----------------------------------


def application_factory():
    """The real server, plus a bare endpoint that only reads the body (the baseline)."""
    from server.wsgi import app as merit

    def bare(environ, start_response):
        stream = environ["wsgi.input"]
        while stream.read(65536):
            pass
        body = b"ok"
        start_response(
            "201 Created", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]

    def dispatch(environ, start_response):
        if environ.get("PATH_INFO") == BARE_PATH:
            return bare(environ, start_response)
        return merit(environ, start_response)

    return dispatch


# ---- the form: sixty questions in groups, a repeat and a photo -------------------------------


def build_form() -> tuple[str, dict]:
    """Return an XForm of ~60 fields and its field schema."""
    fields = []
    instance, binds, body = [], [], []
    for group in range(6):
        gname = f"section_{group}"
        inner = []
        for index in range(9):
            name = f"q{group}_{index}"
            kind = ("int", "string", "select_one", "decimal", "date")[index % 5]
            bind_type = {"select_one": "string"}.get(kind, kind)
            inner.append(f"<{name}/>")
            binds.append(f'<bind nodeset="/data/{gname}/{name}" type="{bind_type}"/>')
            fields.append(
                {
                    "path": f"/data/{gname}/{name}",
                    "name": name,
                    "kind": "field",
                    "type": kind,
                    "parent": f"/data/{gname}",
                    "repeat": None,
                    "repeats": [],
                    "audit": False,
                    "pii": False,
                }
            )
        instance.append(f"<{gname}>{''.join(inner)}</{gname}>")
        fields.insert(
            len(fields) - 9,
            {
                "path": f"/data/{gname}",
                "name": gname,
                "kind": "group",
                "type": "group",
                "parent": None,
                "repeat": None,
                "repeats": [],
            },
        )
    instance.append(
        '<people jr:template=""><pname/><page/></people><people><pname/><page/></people>'
    )
    fields.append(
        {
            "path": "/data/people",
            "name": "people",
            "kind": "repeat",
            "type": "repeat",
            "parent": None,
            "repeat": None,
            "repeats": [],
        }
    )
    for name, kind in (("pname", "string"), ("page", "int")):
        binds.append(f'<bind nodeset="/data/people/{name}" type="{kind}"/>')
        fields.append(
            {
                "path": f"/data/people/{name}",
                "name": name,
                "kind": "field",
                "type": kind,
                "parent": "/data/people",
                "repeat": "/data/people",
                "repeats": ["/data/people"],
                "audit": False,
                "pii": False,
            }
        )
    instance.append("<photo/>")
    binds.append('<bind nodeset="/data/photo" type="binary"/>')
    fields.append(
        {
            "path": "/data/photo",
            "name": "photo",
            "kind": "field",
            "type": "binary",
            "parent": None,
            "repeat": None,
            "repeats": [],
            "audit": False,
            "pii": False,
        }
    )
    instance.append("<meta><instanceID/></meta>")
    binds.append('<bind nodeset="/data/meta/instanceID" type="string" jr:preload="uid"/>')
    body.append('<upload mediatype="image/*" ref="/data/photo"><label>Photo</label></upload>')
    xml = (
        '<?xml version="1.0"?><h:html xmlns="http://www.w3.org/2002/xforms" '
        'xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa">'
        "<h:head><h:title>Benchmark</h:title><model><instance>"
        f'<data id="{FORM_ID}" version="{VERSION}">{"".join(instance)}</data></instance>'
        f"{''.join(binds)}</model></h:head><h:body>{''.join(body)}</h:body></h:html>"
    )
    schema = {
        "formId": FORM_ID,
        "version": VERSION,
        "title": "Benchmark",
        "root": "data",
        "languages": [],
        "defaultLanguage": None,
        "instanceName": None,
        "publicKey": None,
        "submissionUrl": None,
        "media": [],
        "choiceLists": {},
        "fields": fields,
    }
    return xml, schema


def record_xml(instance_id: str, photo: str | None) -> bytes:
    """A record of the benchmark form, about 5 KB like a real needs assessment."""
    parts = [f'<data id="{FORM_ID}" version="{VERSION}">']
    for group in range(6):
        parts.append(f"<section_{group}>")
        for index in range(9):
            value = (
                "42",
                "Réponse libre assez longue pour ressembler à une vraie réponse "
                "d'enquêteur sur le terrain",
                "option_3",
                "12.5",
                "2026-11-24",
            )[index % 5]
            parts.append(f"<q{group}_{index}>{value}</q{group}_{index}>")
        parts.append(f"</section_{group}>")
    for person in range(4):
        parts.append(f"<people><pname>Personne {person}</pname><page>{20 + person}</page></people>")
    parts.append(
        f"<photo>{photo or ''}</photo><meta><instanceID>{instance_id}</instanceID></meta></data>"
    )
    return "".join(parts).encode("utf-8")


def multipart(xml: bytes, photo: bytes | None) -> tuple[bytes, str]:
    boundary = "merit" + secrets.token_hex(8)
    chunks = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="xml_submission_file"; '
        f'filename="record.xml"\r\nContent-Type: text/xml\r\n\r\n'.encode(),
        xml,
        b"\r\n",
    ]
    if photo is not None:
        chunks += [
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo.jpg"; '
            f'filename="photo.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode(),
            photo,
            b"\r\n",
        ]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


# ---- setting up the database and the server --------------------------------------------------


def scratch_database() -> str:
    admin = sa.engine.make_url(ADMIN_PG.replace("postgresql://", "postgresql+psycopg://"))
    name = f"merit_bench_{secrets.token_hex(4)}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    url = admin.set(database=name).render_as_string(hide_password=False)
    return url.replace("postgresql+psycopg://", "postgresql://")


def drop_database(url: str) -> None:
    name = sa.engine.make_url(url.replace("postgresql://", "postgresql+psycopg://")).database
    admin = sa.engine.make_url(ADMIN_PG.replace("postgresql://", "postgresql+psycopg://"))
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def prepare(url: str, data_dir: Path) -> str:
    """Migrate, create the admin and project 1, publish the form, create a tablet; its token."""
    from server import bootstrap
    from server.app import create_app
    from server.auth import app_users
    from server.auth import services as accounts
    from server.db import utcnow
    from server.forms.models import Form, FormVersion

    migrate.upgrade(url)
    app = create_app(
        {
            "DATABASE_URL": url,
            "DATA_DIR": str(data_dir),
            "LOG_LEVEL": "WARNING",
            "FORMS_DIR": str(data_dir / "no-forms"),
            "SECRET_KEY": SECRET,
        }
    )
    bootstrap.setup(app)
    xml, schema = build_form()
    with app.app_context(), app.extensions["merit.db"].session() as db_session:
        form = Form(project_id=1, xml_form_id=FORM_ID, state="open")
        db_session.add(form)
        db_session.flush()
        version = FormVersion(
            form_id=form.id,
            version=VERSION,
            title="Benchmark",
            xml=xml,
            hash=hashlib.md5(xml.encode()).hexdigest(),
            sha256=hashlib.sha256(xml.encode()).hexdigest(),
            schema=schema,
            published_at=utcnow(),
        )
        db_session.add(version)
        db_session.flush()
        form.current_version_id = version.id
        app_user, token = app_users.create(
            db_session, 1, "Bench tablet", secret_key=SECRET, by=None
        )
        accounts.assign(db_session, app_user.actor_id, "app-user", form_id=form.id, by=None)
        db_session.commit()
    app.extensions["merit.db"].dispose()
    return token


def preload(url: str, count: int) -> float:
    """Insert ``count`` records straight into the tables (fast, not measured); seconds taken."""
    started = time.perf_counter()
    engine = create_engine(url)
    xml = record_xml("uuid:00000000-0000-0000-0000-000000000000", None).decode()
    document = json.dumps({"note": "preloaded", "section_0": {"q0_0": "42"}})
    with engine.begin() as connection:
        form_id = connection.execute(
            sa.text("SELECT id FROM forms WHERE xml_form_id = :f"), {"f": FORM_ID}
        ).scalar()
        version_id = connection.execute(
            sa.text("SELECT current_version_id FROM forms WHERE id = :f"), {"f": form_id}
        ).scalar()
        # The trigger that numbers records one by one (``seq``, for the paging cursors) would
        # update its counter row once per row of a batch, each time behind a longer chain of
        # versions of that row: the numbers are given here, the counter set once at the end.
        connection.execute(sa.text("ALTER TABLE submissions DISABLE TRIGGER submissions_seq"))
        batch = 200_000
        for start in range(0, count, batch):
            size = min(batch, count - start)
            connection.execute(
                sa.text(
                    "INSERT INTO submissions (form_id, draft, instance_id, created_at, seq) "
                    "SELECT :f, false, 'uuid:pre-' || g, now() - (g || ' seconds')::interval,"
                    " g + 1 FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) g"
                ),
                {"f": form_id, "a": start, "b": start + size - 1},
            )
            connection.execute(
                sa.text(
                    "INSERT INTO submission_versions (submission_id, form_id, draft,"
                    " form_version_id, instance_id, current, xml, xml_sha256, document, created_at,"
                    " attachments_expected, attachments_present, encrypted) "
                    "SELECT s.id, s.form_id, false, :v, s.instance_id, true, :xml,"
                    " md5(s.instance_id), CAST(:doc AS jsonb), s.created_at, 0, 0, false "
                    "FROM submissions s WHERE s.form_id = :f AND s.instance_id LIKE 'uuid:pre-%' "
                    "AND s.id > (SELECT COALESCE(MAX(submission_id), 0) FROM submission_versions)"
                ),
                {"f": form_id, "v": version_id, "xml": xml, "doc": document},
            )
        connection.execute(
            sa.text(
                "INSERT INTO submission_sequences (form_id, last_seq) VALUES (:f, :n) "
                "ON CONFLICT (form_id) DO UPDATE SET last_seq = EXCLUDED.last_seq"
            ),
            {"f": form_id, "n": count},
        )
        connection.execute(sa.text("ALTER TABLE submissions ENABLE TRIGGER submissions_seq"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM ANALYZE"))
        # Write the load out now, not while the next measurement runs.
        connection.execute(sa.text("CHECKPOINT"))
    engine.dispose()
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(
    url: str,
    data_dir: Path,
    storage: str | None,
    port: int,
    workers: int,
    threads: int,
    source: Path = ROOT,
) -> subprocess.Popen:
    env = {
        **os.environ,
        "MERIT_BENCH_SOURCE": str(source),
        "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]),
        "MERIT_DATABASE_URL": url,
        "MERIT_DATA_DIR": str(data_dir),
        "MERIT_PORT": str(port),
        "MERIT_WORKERS": str(workers),
        "MERIT_THREADS": str(threads),
        "MERIT_LOG_LEVEL": "WARNING",
        "MERIT_SECRET_KEY": SECRET,
        "MERIT_FORMS_DIR": str(data_dir / "no-forms"),
    }
    if storage:
        env["MERIT_STORAGE_URL"] = storage
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [
            str(gunicorn),
            "--config",
            str(source / "server" / "gunicorn_conf.py"),
            "--pythonpath",
            str(ROOT / "scripts"),
            "bench_intake:application_factory()",
        ],
        env=env,
        cwd=source,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start: " + process.stderr.read().decode()[-2000:])


def server_cpu(process: subprocess.Popen) -> float:
    """Return the CPU seconds used so far by a server's processes (its own process group).

    Workers that ended count through the master's ``cutime``/``cstime`` once it reaped them.
    """
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the command: state ppid pgrp ... utime (11) stime cutime cstime (14).
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[2]) != process.pid:
            continue
        total += int(fields[11]) + int(fields[12])
        if stat.parent.name == str(process.pid):
            total += int(fields[13]) + int(fields[14])
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """One server under measurement: the code it runs, its process, where to send records."""

    label: str
    process: subprocess.Popen
    port: int
    submit: str
    url: str
    data_dir: Path


# ---- the load generator ----------------------------------------------------------------------


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, bool]:
    """Read one HTTP response from a keep-alive socket; return its status and whether the
    server closes the connection after it (``Connection: close``)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    closing = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection":
            closing = value.strip().lower() == b"close"
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        rest += chunk
    buffer[:] = rest[length:]
    return status, closing


def run_load(port: int, requests_for: callable, concurrency: int, seconds: float) -> dict:
    """Send requests from ``concurrency`` keep-alive connections for ``seconds``."""
    stop = time.perf_counter() + seconds
    done, errors = [0] * concurrency, [0] * concurrency
    latencies: list[list[float]] = [[] for _ in range(concurrency)]

    def worker(slot: int) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        buffer = bytearray()
        number = 0
        while time.perf_counter() < stop:
            request = requests_for(slot, number)
            number += 1
            began = time.perf_counter()
            sock.sendall(request)
            status, closing = _read_response(sock, buffer)
            latencies[slot].append(time.perf_counter() - began)
            if status == 201:
                done[slot] += 1
            else:
                errors[slot] += 1
            if closing:
                # A nearly full worker stops keeping connections alive (server/ops/worker.py):
                # connect again, as HTTP clients do, to whichever worker has room.
                sock.close()
                sock = socket.create_connection(("127.0.0.1", port))
                buffer.clear()
        sock.close()

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = sorted(x for slot in latencies for x in slot)
    return {
        "rate": sum(done) / elapsed,
        "ok": sum(done),
        "errors": sum(errors),
        "p50_ms": 1000 * every[len(every) // 2] if every else 0,
        "p95_ms": 1000 * every[int(len(every) * 0.95)] if every else 0,
    }


def request_bytes(path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-OpenRosa-Version: 1.0\r\n"
        f"User-Agent: org.odk.collect.android/v2024.2.4 bench\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def scenario(path: str, photo: bytes | None, unique: bool = True):
    """Return a function building the n-th request of connection ``slot``."""
    template = record_xml(
        "uuid:@@@@@@@@-@@@@-@@@@-@@@@-@@@@@@@@@@@@", "photo.jpg" if photo else None
    )
    body, content_type = multipart(template, photo)
    marker = b"uuid:@@@@@@@@-@@@@-@@@@-@@@@-@@@@@@@@@@@@"
    at = body.index(marker)
    static = request_bytes(path, body, content_type)
    head_len = len(static) - len(body)

    def build(slot: int, number: int) -> bytes:
        if not unique:
            return static
        iid = f"uuid:{uuid.uuid4()}".encode()
        start = head_len + at
        return static[:start] + iid + static[start + len(marker) :]

    return build


def run_measured(server: Server, requests_for: callable, concurrency: int, seconds: float):
    """Run one load against a server; add its CPU milliseconds per answered request."""
    began = server_cpu(server.process)
    result = run_load(server.port, requests_for, concurrency, seconds)
    spent = server_cpu(server.process) - began
    result["cpu_ms"] = 1000 * spent / max(result["ok"] + result["errors"], 1)
    return result


def measure(
    servers: list[Server], photo: bytes, concurrencies: list[int], seconds: float, label: str
) -> dict[tuple[str, int], dict]:
    """Measure every concurrency, bare endpoint against intake; print a table; return it."""
    header = (
        f"{'server':>8} | {'conc.':>5} | {'bare/s':>7} | {'records/s':>9} | {'ratio':>5} | "
        f"{'p95 ms':>6} | {'CPU ms/bare':>11} | {'CPU ms/record':>13} | "
        f"{'with photo/s':>12} | {'ratio':>5} | {'CPU ms/record+photo':>19}"
    )
    print(f"\n{label}\n{header}\n{'-' * len(header)}")
    results: dict[tuple[str, int], dict] = {}
    for concurrency in concurrencies:
        for server in servers:
            bare_plain = scenario(BARE_PATH, None, unique=False)
            bare = run_measured(server, bare_plain, concurrency, seconds)
            plain = run_measured(server, scenario(server.submit, None), concurrency, seconds)
            bare_with = scenario(BARE_PATH, photo, unique=False)
            bare_photo = run_measured(server, bare_with, concurrency, seconds)
            with_photo = run_measured(server, scenario(server.submit, photo), concurrency, seconds)
            errors = plain["errors"] + with_photo["errors"]
            results[server.label, concurrency] = {
                "plain": plain,
                "photo": with_photo,
                "bare": bare,
                "plain_ratio": plain["rate"] / bare["rate"],
                "photo_ratio": with_photo["rate"] / bare_photo["rate"],
            }
            print(
                f"{server.label:>8} | {concurrency:>5} | {bare['rate']:>7.0f} | "
                f"{plain['rate']:>9.0f} | {plain['rate'] / bare['rate']:>5.2f} | "
                f"{plain['p95_ms']:>6.1f} | {bare['cpu_ms']:>11.2f} | {plain['cpu_ms']:>13.2f} | "
                f"{with_photo['rate']:>12.0f} | {with_photo['rate'] / bare_photo['rate']:>5.2f} | "
                f"{with_photo['cpu_ms']:>19.2f}" + (f"   ({errors} errors)" if errors else ""),
                flush=True,
            )
    if len(servers) == 2:
        new, old = servers
        print(f"\n{new.label} against {old.label} (CPU per record, lower is cheaper):")
        for c in concurrencies:
            a, b = results[new.label, c], results[old.label, c]
            print(
                f"  concurrency {c:>2}: x{a['plain']['cpu_ms'] / b['plain']['cpu_ms']:.3f} "
                f"without photo, x{a['photo']['cpu_ms'] / b['photo']['cpu_ms']:.3f} with photo; "
                f"intake beyond the bare endpoint "
                f"{a['plain']['cpu_ms'] - a['bare']['cpu_ms']:.2f} ms against "
                f"{b['plain']['cpu_ms'] - b['bare']['cpu_ms']:.2f} ms"
            )
    return results


def checkout(rev: str) -> Path:
    """Return a temporary git worktree of ``rev`` (removed by :func:`remove_checkout`)."""
    where = Path(tempfile.mkdtemp(prefix="merit-bench-against-")) / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(where), rev],
        check=True,
    )
    return where


def remove_checkout(where: Path) -> None:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], check=False
    )
    shutil.rmtree(where.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preload", type=int, default=0, help="records stored before measuring")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measurement")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--photo-kb", type=int, default=200)
    parser.add_argument("--storage", help="MERIT_STORAGE_URL for attachments (default: a folder)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--against", metavar="REV", help="also measure another commit's server")
    args = parser.parse_args()

    sources = [("this", ROOT)]
    if args.against:
        sources.append((args.against[:8], checkout(args.against)))
    servers: list[Server] = []
    urls: list[str] = []
    try:
        for label, source in sources:
            url = scratch_database()
            urls.append(url)
            data_dir = Path(tempfile.mkdtemp(prefix="merit-bench-"))
            token = prepare(url, data_dir)
            port = free_port()
            process = start_server(
                url, data_dir, args.storage, port, args.workers, args.threads, source
            )
            submit = f"/v1/key/{token}/projects/1/submission"
            servers.append(Server(label, process, port, submit, url, data_dir))
            # Warm up: imports, connection pools, the schema cache.
            run_load(port, scenario(submit, None), 4, 2.0)
        photo = os.urandom(args.photo_kb * 1024)
        print(
            f"\nserver: gunicorn {args.workers} workers x {args.threads} threads, PostgreSQL, "
            f"storage {args.storage or 'local folder'}; records ~"
            f"{len(record_xml('uuid:' + 'x' * 36, None)) / 1024:.1f} KB, "
            f"photo {args.photo_kb} KB; {args.seconds:.0f} s per cell; "
            f"servers: {', '.join(f'{label} ({src})' for label, src in sources)}"
        )
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        empty = measure(servers, photo, concurrencies, args.seconds, "empty database")
        if args.preload:
            # Same servers, same run: only the size of the tables differs.
            for server in servers:
                seconds = preload(server.url, args.preload)
                print(f"\npreloaded {args.preload:,} records in {seconds:.0f} s (not measured)")
            full = measure(servers, photo, concurrencies, args.seconds, f"{args.preload:,} records")
            print(f"\nwith {args.preload:,} records, relative to the empty database:")
            for server in servers:
                for c in concurrencies:
                    before, after = empty[server.label, c], full[server.label, c]
                    plain = after["plain"]["rate"] / before["plain"]["rate"]
                    with_photo = after["photo"]["rate"] / before["photo"]["rate"]
                    # Against the bare endpoint of the same moment, which cancels the machine's
                    # own drift between the two measurements.
                    plain_bare = after["plain_ratio"] / before["plain_ratio"]
                    photo_bare = after["photo_ratio"] / before["photo_ratio"]
                    print(
                        f"  {server.label} concurrency {c:>2}: records/s x{plain:.2f} "
                        f"(x{plain_bare:.2f} against bare), with photo x{with_photo:.2f} "
                        f"(x{photo_bare:.2f} against bare)"
                    )
    finally:
        for server in servers:
            os.killpg(server.process.pid, signal.SIGTERM)
            server.process.wait(30)
        for url in urls:
            if args.keep:
                print(f"scratch database kept: {url}")
            else:
                drop_database(url)
        for _label, source in sources[1:]:
            remove_checkout(source)


if __name__ == "__main__":
    main()
