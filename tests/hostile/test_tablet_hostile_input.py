"""Hostile input over real HTTP, as a tablet (or anyone holding a token or an account) could
send it: each kind is refused with a 4xx that says what is wrong, nothing of it is stored, and
the worker that received it keeps serving.


XML with DTDs, external entities and entity bombs; spreadsheets that are zip bombs or hold
millions of rows; multipart bodies that lie about their length; file names with ``../`` or
control characters; huge headers; malformed bodies. The server runs as in production
(gunicorn, ``merit serve``) on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import io
import socket
import time

import pytest
import requests
import sqlalchemy as sa
from urllib3 import encode_multipart_formdata

from server.db import create_engine
from tests.fixtures.forms import workbooks
from tests.support.openrosa import (
    FORM_ID,
    VERSION,
    VILLAGES_CSV,
    XFORM,
    jpeg,
    new_instance_id,
    record,
)
from tests.support.servers import ServerProcess, server_env

pytestmark = pytest.mark.slow
ADMIN = ("admin@example.org", "un mot de passe de test assez long")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture(scope="module")
def server(module_database_url, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("hostile")
    env = server_env(
        module_database_url,
        tmp_path,
        ADMIN_PASSWORD=ADMIN[1],
        MAX_UPLOAD_BYTES="20000000",
        UPLOAD_STALL_SECONDS="3",
    )
    with ServerProcess(env, log_path=tmp_path / "server.log") as process:
        api = requests.Session()
        token = api.post(
            f"{process.url}/v1/sessions", json={"email": ADMIN[0], "password": ADMIN[1]}
        ).json()["token"]
        api.headers["Authorization"] = f"Bearer {token}"
        app_user = api.post(
            f"{process.url}/v1/projects/1/app-users", json={"displayName": "Tablette"}
        ).json()
        base = f"{process.url}/v1/projects/1/forms"
        created = api.post(
            base,
            data=XFORM.format(form_id=FORM_ID, version=VERSION).encode(),
            headers={"Content-Type": "application/xml"},
        )
        assert created.status_code == 200, created.text
        api.post(
            f"{base}/{FORM_ID}/draft/attachments/villages.csv",
            data=VILLAGES_CSV,
            headers={"Content-Type": "text/csv"},
        ).raise_for_status()
        api.post(f"{base}/{FORM_ID}/draft/publish").raise_for_status()
        api.post(f"{base}/{FORM_ID}/assignments/app-user/{app_user['id']}").raise_for_status()
        process.api = api
        process.submission = f"{process.url}/v1/key/{app_user['token']}/projects/1/submission"
        process.database_url = module_database_url
        yield process


def rows(server, table: str) -> int:
    engine = create_engine(server.database_url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        count = connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar()  # noqa: S608
    engine.dispose()
    return count


def still_serving(server) -> None:
    """The worker that took the hostile request still answers, and still stores records."""
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    body, content_type = encode_multipart_formdata(
        [
            (
                "xml_submission_file",
                ("r.xml", record(new_instance_id(), photo=None, audit=None), "text/xml"),
            ),
        ]
    )
    response = requests.post(
        server.submission, data=body, timeout=30, headers={"Content-Type": content_type}
    )
    assert response.status_code == 201, response.text


def read_answer(sock: socket.socket) -> bytes:
    """Read one HTTP response (head and body by Content-Length) from a raw socket."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            return answer
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def post_xml(server, xml: bytes, files=()) -> requests.Response:
    body, content_type = encode_multipart_formdata(
        [("xml_submission_file", ("r.xml", xml, "text/xml")), *files]
    )
    return requests.post(
        server.submission, data=body, timeout=30, headers={"Content-Type": content_type}
    )


def _billion_laughs() -> bytes:
    """Nine levels of entities, each ten of the one below: 3 GB once expanded."""
    levels = ['<!ENTITY lol0 "lol">']
    levels += [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    return (
        f'<?xml version="1.0"?><!DOCTYPE lolz [{"".join(levels)}]><data id="menage">&lol9;</data>'
    ).encode()


BILLION_LAUGHS = _billion_laughs()

HOSTILE_XML = {
    "billion laughs": BILLION_LAUGHS,
    "external entity": b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM '
    b'"file:///etc/passwd">]><data id="menage"><name>&x;</name></data>',
    "external DTD": b'<?xml version="1.0"?><!DOCTYPE data SYSTEM "http://127.0.0.1:9/x.dtd">'
    b'<data id="menage"/>',
    "parameter entity": b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY % p SYSTEM '
    b'"http://127.0.0.1:9/p">%p;]><data id="menage"/>',
    "deep nesting": b'<data id="menage">' + b"<g>" * 5000 + b"</g>" * 5000 + b"</data>",
    "not XML": b"\x00\x01\x02 PK\x03\x04 binary",
    "unclosed": b'<data id="menage"><name>Awa</data>',
}


@pytest.mark.parametrize("kind", list(HOSTILE_XML))
def test_hostile_xml_is_refused_with_a_message_and_nothing_is_stored(server, kind):
    before = rows(server, "submissions")
    response = post_xml(server, HOSTILE_XML[kind])
    assert response.status_code == 400
    assert "<OpenRosaResponse" in response.text and "<message" in response.text
    assert "root:" not in response.text  # nothing of /etc/passwd
    assert rows(server, "submissions") == before
    still_serving(server)


def test_file_names_with_dot_dot_and_control_characters_are_cleaned(server, tmp_path):
    iid = new_instance_id()
    name = "photo.jpg"
    response = post_xml(
        server,
        record(iid, photo=name, audit=None),
        [
            ("../../../../tmp/evil.jpg", ("../../../../tmp/evil.jpg", b"evil", "image/jpeg")),
            ("ph\x01oto\x7f.jpg", ("ph\x01oto\x7f.jpg", jpeg(1), "image/jpeg")),
        ],
    )
    assert response.status_code == 201
    engine = create_engine(server.database_url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        names = connection.execute(
            sa.text(
                "SELECT a.name, a.blob_id IS NOT NULL FROM submission_attachments a "
                "JOIN submission_versions v ON v.id = a.submission_version_id "
                "WHERE v.instance_id = :iid"
            ),
            {"iid": iid},
        ).all()
    engine.dispose()
    # The control characters were dropped, so the part matched the record's "photo.jpg";
    # "../../../../tmp/evil.jpg" became "evil.jpg", which the record does not name.
    assert [tuple(r) for r in names] == [("photo.jpg", True)]
    assert not (tmp_path.parent / "evil.jpg").exists()
    still_serving(server)


def test_a_body_shorter_than_its_declared_length_is_never_stored(server):
    before = rows(server, "submissions")
    body, content_type = encode_multipart_formdata(
        [
            (
                "xml_submission_file",
                ("r.xml", record(new_instance_id(), photo=None, audit=None), "text/xml"),
            ),
        ]
    )
    path = server.submission.split(str(server.port), 1)[1]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) + 5000}\r\n\r\n".encode()
            + body
        )
        sock.shutdown(socket.SHUT_WR)  # the connection "drops" before the rest arrives
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if answer:
        assert answer.split(b" ", 2)[1].startswith(b"4")
    assert rows(server, "submissions") == before
    still_serving(server)


def test_a_body_that_stalls_is_given_up_and_stores_nothing(server):
    before = rows(server, "submissions")
    path = server.submission.split(str(server.port), 1)[1]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            "multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n".encode()
        )
        started = time.monotonic()
        answer = read_answer(sock)
        waited = time.monotonic() - started
    assert answer.split(b" ", 2)[1] == b"408"
    assert waited < 25  # the stall limit (3 s), far below the 30 s socket timeout
    assert rows(server, "submissions") == before
    still_serving(server)


def test_a_declared_length_above_the_limit_is_413_before_the_body_is_read(server):
    path = server.submission.split(str(server.port), 1)[1]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            "multipart/form-data; boundary=x\r\nContent-Length: 900000000\r\n\r\n".encode()
        )
        answer = read_answer(sock)
    assert answer.split(b" ", 2)[1] == b"413"
    assert b"<OpenRosaResponse" in answer
    still_serving(server)


def test_huge_headers_are_refused_and_the_worker_lives(server):
    response = requests.get(f"{server.url}/healthz", headers={"X-Big": "a" * 100_000}, timeout=10)
    assert 400 <= response.status_code < 500
    many = {f"X-H{i}": "v" for i in range(300)}
    assert 400 <= requests.get(f"{server.url}/healthz", headers=many, timeout=10).status_code < 500
    still_serving(server)


def test_a_multipart_body_without_a_boundary_is_400(server):
    response = requests.post(
        server.submission,
        data=b"--x\r\nnothing\r\n--x--\r\n",
        headers={"Content-Type": "multipart/form-data"},
        timeout=10,
    )
    assert response.status_code == 400
    assert "<message" in response.text
    still_serving(server)


def test_thousands_of_parts_are_refused(server):
    fields = [
        (
            "xml_submission_file",
            ("r.xml", record(new_instance_id(), photo=None, audit=None), "text/xml"),
        )
    ]
    fields += [(f"f{i}", f"v{i}") for i in range(3000)]
    body, content_type = encode_multipart_formdata(fields)
    response = requests.post(
        server.submission, data=body, timeout=30, headers={"Content-Type": content_type}
    )
    assert 400 <= response.status_code < 500
    still_serving(server)


@pytest.mark.parametrize(
    ("kind", "workbook"),
    [
        ("zip bomb", lambda: workbooks.zip_bomb(400_000_000)),
        ("a million rows", lambda: workbooks.streamed_rows(1_000_000)),
        ("a DTD inside", workbooks.with_dtd),
        ("not a workbook", lambda: b"PK\x03\x04 definitely not a zip"),
    ],
)
def test_hostile_spreadsheets_are_refused_with_a_clear_400(server, kind, workbook):
    before = rows(server, "forms")
    response = server.api.post(
        f"{server.url}/v1/projects/1/forms",
        data=workbook(),
        headers={"Content-Type": XLSX},
        timeout=120,
    )
    assert response.status_code == 400, response.text
    assert response.json()["message"]
    assert rows(server, "forms") == before
    still_serving(server)


def test_invalid_json_to_the_api_is_400_1(server):
    response = requests.post(
        f"{server.url}/v1/sessions",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["code"] == 400.1
    still_serving(server)


@pytest.mark.parametrize("form_id", ["../../etc/passwd", "x' OR '1'='1", "%00", "a" * 300])
def test_strange_form_ids_in_paths_are_404(server, form_id):
    response = server.api.get(f"{server.url}/v1/projects/1/forms/{form_id}.xml", timeout=10)
    assert response.status_code in (400, 404)
    assert response.json()["message"]
    still_serving(server)


def test_a_nul_byte_in_json_text_is_400_not_500(server):
    response = server.api.post(
        f"{server.url}/v1/projects/1/app-users",
        json={"displayName": "Tablette\u0000 1"},
        timeout=10,
    )
    assert response.status_code in (200, 400)  # SQLite stores it; PostgreSQL cannot
    if response.status_code == 400:
        assert response.json()["code"] == 400.8
    still_serving(server)


def test_an_upload_of_raw_bytes_as_xml_is_refused(server):
    response = requests.post(
        server.submission,
        files={"xml_submission_file": ("r.xml", io.BytesIO(b"\xff" * 1000), "text/xml")},
        timeout=10,
    )
    assert response.status_code == 400
    still_serving(server)
