"""Intake against a real gunicorn server: racing identical uploads, chunked bodies, 413.

These replay what tablets do over real HTTP, with several worker processes and threads, on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading

import pytest
import requests
import sqlalchemy as sa
from urllib3 import encode_multipart_formdata

from server import db
from server.db import create_engine
from server.submissions.models import Submission, SubmissionAttachment, SubmissionVersion
from tests.conftest import make_app
from tests.support import factories
from tests.support.openrosa import jpeg, new_instance_id, publish_form, record
from tests.support.servers import ServerProcess, server_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(module_database_url, tmp_path_factory):
    """gunicorn with 2 workers x 8 threads on the test database, and one assigned tablet.

    One server for the module: each test sends records of its own and counts only those.
    """
    tmp_path = tmp_path_factory.mktemp("intake-server")
    app = make_app(module_database_url, tmp_path)
    with app.app_context(), db.database().session() as db_session:
        project = factories.project(db_session)
        app_user, token = factories.app_user(db_session, project.id)
        publish_form(db_session, project.id, app_user_ids=(app_user.actor_id,))
        db_session.commit()
        project_id = project.id
    app.extensions["merit.db"].dispose()
    env = server_env(
        module_database_url,
        tmp_path,
        WORKERS="2",
        THREADS="8",
        MAX_UPLOAD_BYTES="300000",
    )
    with ServerProcess(env, log_path=tmp_path / "server.log") as server:
        yield {
            "url": f"{server.url}/v1/key/{token}/projects/{project_id}",
            "db": module_database_url,
            "server": server,
        }


def body(xml: bytes, files: dict[str, bytes]) -> tuple[bytes, str]:
    fields = [("xml_submission_file", ("record.xml", xml, "text/xml"))]
    fields += [(name, (name, content, "image/jpeg")) for name, content in files.items()]
    return encode_multipart_formdata(fields)


def counts(url: str, *instance_ids: str) -> tuple[int, int, int]:
    """Records, versions and attachments stored for these instanceIDs."""
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    records = sa.select(Submission.id).where(Submission.instance_id.in_(instance_ids))
    versions = sa.select(SubmissionVersion.id).where(SubmissionVersion.submission_id.in_(records))
    queries = (
        records,
        versions,
        sa.select(SubmissionAttachment.id).where(
            SubmissionAttachment.submission_version_id.in_(versions)
        ),
    )
    with engine.connect() as connection:
        result = tuple(
            connection.execute(sa.select(sa.func.count()).select_from(q.subquery())).scalar()
            for q in queries
        )
    engine.dispose()
    return result


def test_identical_uploads_racing_on_two_workers_give_one_record_and_all_succeed(live):
    instance_id = new_instance_id()
    xml = record(instance_id, audit=None)
    payload, content_type = body(xml, {"1715090512345.jpg": jpeg(1, size=100_000)})
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def send() -> None:
        barrier.wait()
        response = requests.post(
            f"{live['url']}/submission",
            data=payload,
            timeout=60,
            headers={"Content-Type": content_type, "X-OpenRosa-Version": "1.0"},
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [201] * 8, live["server"].log()
    assert counts(live["db"], instance_id) == (1, 1, 1)


def test_many_different_records_at_once_are_all_stored(live):
    instance_ids = [new_instance_id() for _ in range(24)]
    payloads = [
        body(record(instance_id, audit=None), {"1715090512345.jpg": jpeg(i)})
        for i, instance_id in enumerate(instance_ids)
    ]
    statuses: list[int] = []

    def send(payload) -> None:
        data, content_type = payload
        statuses.append(
            requests.post(
                f"{live['url']}/submission",
                data=data,
                timeout=60,
                headers={"Content-Type": content_type},
            ).status_code
        )

    threads = [threading.Thread(target=send, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [201] * 24, live["server"].log()
    assert counts(live["db"], *instance_ids) == (24, 24, 24)


def test_a_chunked_body_is_accepted(live):
    instance_id = new_instance_id()
    payload, content_type = body(
        record(instance_id, audit=None), {"1715090512345.jpg": jpeg(2, size=50_000)}
    )

    def chunks():
        for start in range(0, len(payload), 4096):
            yield payload[start : start + 4096]

    response = requests.post(
        f"{live['url']}/submission",
        data=chunks(),
        timeout=60,
        headers={"Content-Type": content_type},
    )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 201, response.text
    assert counts(live["db"], instance_id) == (1, 1, 1)


def test_an_oversized_upload_gets_413_with_an_openrosa_message(live):
    instance_id = new_instance_id()
    payload, content_type = body(
        record(instance_id, audit=None), {"1715090512345.jpg": jpeg(3, size=400_000)}
    )
    response = requests.post(
        f"{live['url']}/submission",
        data=payload,
        timeout=60,
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert "300000" in response.text
    assert counts(live["db"], instance_id) == (0, 0, 0)


def test_an_oversized_chunked_upload_gets_413_too(live):
    instance_id = new_instance_id()
    payload, content_type = body(
        record(instance_id, audit=None), {"1715090512345.jpg": jpeg(4, size=400_000)}
    )
    response = requests.post(
        f"{live['url']}/submission",
        timeout=60,
        data=(payload[i : i + 8192] for i in range(0, len(payload), 8192)),
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 413
    assert counts(live["db"], instance_id) == (0, 0, 0)
