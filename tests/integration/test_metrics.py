"""``/metrics`` and the logs: what an operator's Prometheus and log collector get.

In-process tests read the counters before and after (the registry is the process's own and
outlives each test); the live tests run gunicorn with two workers, whose counts prometheus's
multiprocess mode must add up, and read everything gunicorn and the application write.
"""

from __future__ import annotations

import json
import re
import socket
import threading

import pytest
import requests
from prometheus_client import REGISTRY
from urllib3 import encode_multipart_formdata

from server import metrics
from server.storage.base import stage_bytes
from tests.support import factories, s3
from tests.support.openrosa import (
    OPENROSA,
    jpeg,
    multipart,
    new_instance_id,
    publish_form,
    record,
)
from tests.support.servers import ServerProcess, server_env

s3_server = s3.s3_server
s3_bucket = s3.s3_bucket


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def device(db_session):
    project = factories.project(db_session)
    app_user, token = factories.app_user(db_session, project.id)
    publish_form(db_session, project.id, app_user_ids=(app_user.actor_id,))
    return f"/v1/key/{token}/projects/{project.id}"


def post(client, base, xml, files=None):
    return client.post(
        f"{base}/submission",
        data=multipart(xml, files),
        headers=OPENROSA,
        content_type="multipart/form-data",
    )


def test_intake_counts_records_by_outcome_conflicts_and_rejections_by_code(client, device):
    before = {
        "created": value("merit_submissions_received_total", outcome="created"),
        "duplicate": value("merit_submissions_received_total", outcome="duplicate"),
        "attachments": value("merit_submission_attachments_received_total"),
        "conflicts": value("merit_submission_conflicts_total"),
        "409.1": value("merit_submission_rejections_total", code="409.1"),
        "404.6": value("merit_submission_rejections_total", code="404.6"),
        "latency": value(
            "merit_http_request_duration_seconds_count",
            endpoint="openrosa.submission",
            method="POST",
        ),
    }
    iid = new_instance_id()
    assert post(client, device, record(iid), {"1715090512345.jpg": jpeg(1)}).status_code == 201
    assert post(client, device, record(iid), {"1715090512345.jpg": jpeg(1)}).status_code == 201
    assert post(client, device, record(iid, name="Autre")).status_code == 409
    assert post(client, device, record(new_instance_id(), version="nope")).status_code == 404

    assert value("merit_submissions_received_total", outcome="created") == before["created"] + 1
    assert value("merit_submissions_received_total", outcome="duplicate") == before["duplicate"] + 1
    assert value("merit_submission_attachments_received_total") == before["attachments"] + 1
    assert value("merit_submission_conflicts_total") == before["conflicts"] + 1
    assert value("merit_submission_rejections_total", code="409.1") == before["409.1"] + 1
    assert value("merit_submission_rejections_total", code="404.6") == before["404.6"] + 1
    assert (
        value(
            "merit_http_request_duration_seconds_count",
            endpoint="openrosa.submission",
            method="POST",
        )
        == before["latency"] + 4
    )
    # The conflict waits for a coordinator: a gauge read from the database at scrape time.
    scraped = client.get("/metrics").get_data(as_text=True)
    assert re.search(r"^merit_submission_conflicts_open 1\.0$", scraped, re.M)


def test_metrics_are_served_in_prometheus_format_with_the_spool_and_exports(client, app):
    metrics.observe_export("csv.zip", 2.5, rows=1200)
    with app.app_context():
        from server.storage import services

        staged = stage_bytes(b"a photo waiting for the store", services.staging_dir())
        services.spool().add(staged)
        staged.discard()
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.content_type.startswith("text/plain; version=")
    text = answer.get_data(as_text=True)
    assert re.search(r"^merit_spool_files 1\.0$", text, re.M)
    assert re.search(r"^merit_spool_bytes 29\.0$", text, re.M)
    assert re.search(r'^merit_export_duration_seconds_count\{format="csv.zip"\} \d', text, re.M)
    assert re.search(r'^merit_export_rows_total\{format="csv.zip"\} \d', text, re.M)
    assert "# TYPE merit_http_request_duration_seconds histogram" in text


@pytest.mark.parametrize("app_overrides", [{"METRICS_TOKEN": "prometheus-scrape-token"}])
def test_with_a_token_metrics_need_it_as_a_bearer(client, app_overrides):
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert "MERIT_METRICS_TOKEN" in refused.get_data(as_text=True)
    wrong = client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    good = client.get("/metrics", headers={"Authorization": "Bearer prometheus-scrape-token"})
    assert good.status_code == 200
    assert b"merit_http_requests_total" in good.data
    assert client.post("/metrics").status_code == 405


def test_failed_s3_calls_are_counted_by_operation(database_url, tmp_path, s3_bucket):
    from tests.conftest import make_app

    app = make_app(database_url, tmp_path, STORAGE_URL="s3://merit-no-such-bucket/x")
    before = value("merit_s3_errors_total", operation="PutObject", code="404")
    with app.app_context():
        from server.storage import services
        from server.storage.base import StorageError

        staged = stage_bytes(b"photo", services.staging_dir())
        with pytest.raises(StorageError):
            services.store().put(staged)
    app.extensions["merit.db"].dispose()
    assert value("merit_s3_errors_total", operation="PutObject", code="404") == before + 1


def test_an_unreachable_s3_endpoint_is_counted(database_url, tmp_path, monkeypatch):
    from tests.conftest import make_app
    from tests.support.servers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    app = make_app(database_url, tmp_path, STORAGE_URL="s3://merit-attachments/x")
    before = value("merit_s3_errors_total", operation="HeadBucket", code="EndpointConnectionError")
    with app.app_context():
        from server.storage import services
        from server.storage.base import StorageUnavailable

        with pytest.raises(StorageUnavailable):
            services.store().check()
    app.extensions["merit.db"].dispose()
    after = value("merit_s3_errors_total", operation="HeadBucket", code="EndpointConnectionError")
    assert after == before + 1


# ---- against gunicorn ---------------------------------------------------------------------------


SECRETS = {
    "token": None,  # the app user's, filled in by the fixture
    "bearer": "a-bearer-token-that-must-never-be-logged-0123456789",
    "password": "a password that must never be logged",
    "passphrase": "une phrase secrète à ne jamais écrire",
}


@pytest.fixture
def live(database_url, tmp_path, db_session):
    project = factories.project(db_session)
    app_user, token = factories.app_user(db_session, project.id)
    publish_form(db_session, project.id, app_user_ids=(app_user.actor_id,))
    env = server_env(
        database_url,
        tmp_path,
        WORKERS="2",
        LOG_LEVEL="DEBUG",
    )
    log = tmp_path / "server.log"
    with ServerProcess(env, log_path=log) as server:
        yield server, f"/v1/key/{token}/projects/{project.id}", token, log


@pytest.mark.slow
def test_counts_of_every_worker_add_up(live):
    server, base, _token, _log = live
    payloads = [
        encode_multipart_formdata(
            [
                ("xml_submission_file", ("r.xml", record(new_instance_id(), audit=None))),
                ("1715090512345.jpg", ("1715090512345.jpg", jpeg(i), "image/jpeg")),
            ]
        )
        for i in range(12)
    ]
    statuses = []

    def send(payload):
        body, content_type = payload
        statuses.append(
            requests.post(
                f"{server.url}{base}/submission",
                data=body,
                headers={"Content-Type": content_type},
                timeout=60,
            ).status_code
        )

    threads = [threading.Thread(target=send, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [201] * 12
    text = requests.get(server.url + "/metrics", timeout=30).text
    assert re.search(r'^merit_submissions_received_total\{outcome="created"\} 12\.0$', text, re.M)
    assert re.search(r"^merit_submission_attachments_received_total 12\.0$", text, re.M)
    assert re.search(
        r'^merit_http_request_duration_seconds_count\{endpoint="openrosa.submission",'
        r'method="POST"\} 12\.0$',
        text,
        re.M,
    )
    assert re.search(r"^merit_http_request_body_seconds_count 12\.0$", text, re.M)
    assert re.search(r"^merit_http_request_bodies_receiving 0\.0$", text, re.M)
    pids = set(re.findall(r'pid="(\d+)"', text))
    assert not pids  # live gauges are summed over workers, not listed per process


def raw(server: ServerProcess, data: bytes) -> bytes:
    """Send bytes as they are (malformed requests a client library would refuse to send)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.slow
def test_no_token_password_or_passphrase_reaches_the_logs(live):
    server, base, token, log = live
    url = server.url

    # Requests that carry secrets in every place they can travel.
    def call(method: str, path: str, **kwargs) -> None:
        requests.request(method, url + path, timeout=30, **kwargs)

    call("GET", f"{base}/formList")
    call("GET", f"{base}/formList?token={token}")
    call("GET", "/v1/projects", headers={"Authorization": f"Bearer {SECRETS['bearer']}"})
    call("GET", "/v1/users/current", auth=("admin@example.org", SECRETS["password"]))
    call("POST", "/v1/sessions", json={"email": "a@b.c", "password": SECRETS["password"]})
    call("DELETE", f"/v1/sessions/{SECRETS['bearer']}")
    call("GET", f"/v1/projects/1/forms/f/submissions.csv?passphrase=x{token}")
    call(
        "GET",
        "/v1/projects/1/forms/f/submissions.csv",
        params={"passphrase": SECRETS["passphrase"]},
    )
    # Requests gunicorn itself refuses, and logs with their request line.
    answers = [
        raw(server, f"GET {base}/formList HTTP/9.9\r\nHost: x\r\n\r\n".encode()),
        raw(server, f"GET {base}/formList?passphrase={token} HTTP/1.1 x\r\n\r\n".encode()),
        raw(server, f"G@T {base}/formList HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
        raw(server, f"GET /{'a' * 9000}{base} HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
        raw(
            server,
            f"GET {base}/formList HTTP/1.1\r\nHost: x\r\nBad Header: {token}\r\n\r\n".encode(),
        ),
    ]
    assert all(a.startswith(b"HTTP/1.1 4") for a in answers), answers
    server.stop()

    written = log.read_text(encoding="utf-8")
    for name, secret in {**SECRETS, "token": token}.items():
        assert secret not in written, f"the {name} was logged"
    gunicorn_lines = [line for line in written.splitlines() if "gunicorn.error" in line]
    assert any("Invalid request" in line for line in gunicorn_lines)
    for line in gunicorn_lines:
        json.loads(line)  # gunicorn's lines are JSON too
    # At DEBUG gunicorn logs each request line: the token in it is masked.
    assert any("GET /v1/key/***/projects/" in line for line in gunicorn_lines)
    requests_logged = [
        json.loads(line) for line in written.splitlines() if '"message": "request"' in line
    ]
    assert {"passphrase"} in [set(entry["query"]) for entry in requests_logged]
