"""Scale-out: two server processes on one PostgreSQL and one S3 store, as behind a balancer.

Application processes keep nothing of their own that another process would need: identity and
locks live in PostgreSQL, attachments in the bucket. Tablets' retries and the parts of a split
upload land on whichever process the balancer picks; each record must still be stored once,
whole. PostgreSQL only: it is what several machines share (SQLite is one machine's file).
"""

from __future__ import annotations

import hashlib
import threading

import pytest
import requests
import sqlalchemy as sa
from urllib3 import encode_multipart_formdata

from server import db
from server.db import create_engine
from server.submissions.models import Submission, SubmissionAttachment, SubmissionVersion
from tests.conftest import make_app
from tests.support import databases, factories, s3
from tests.support.openrosa import jpeg, new_instance_id, publish_form, record
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.slow

s3_server = s3.s3_server
s3_bucket = s3.s3_bucket

PHOTO, MEMBER_PHOTO = "1715090512345.jpg", "member.jpg"


@pytest.fixture
def two_servers(pg_url, tmp_path, s3_server, s3_bucket):
    """Two `merit serve` processes, each with its own data folder, sharing database and bucket."""
    databases.reset(pg_url)
    storage_url = f"s3://{s3_bucket}/collect"
    app = make_app(pg_url, tmp_path / "setup", STORAGE_URL=storage_url)
    with app.app_context(), db.database().session() as db_session:
        project = factories.project(db_session)
        app_user, token = factories.app_user(db_session, project.id)
        publish_form(db_session, project.id, app_user_ids=(app_user.actor_id,))
        base = f"/v1/key/{token}/projects/{project.id}"
    app.extensions["merit.db"].dispose()
    servers = []
    for name in ("a", "b"):
        env = {
            **s3_server.env,
            "MERIT_DATA_DIR": str(tmp_path / name / "var"),
            "MERIT_DATABASE_URL": pg_url,
            "MERIT_STORAGE_URL": storage_url,
            "MERIT_SECRET_KEY": "test-secret-key-not-for-production",
            "MERIT_FORMS_DIR": str(tmp_path / "no-forms"),
            "MERIT_WORKERS": "2",
            "MERIT_THREADS": "4",
        }
        servers.append(ServerProcess(env, log_path=tmp_path / f"{name}.log").start())
    yield [server.url + base for server in servers], pg_url, s3_server, s3_bucket
    for server in servers:
        server.stop()


def counts(url: str) -> tuple[int, int, int]:
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        result = tuple(
            connection.execute(sa.select(sa.func.count()).select_from(model)).scalar()
            for model in (Submission, SubmissionVersion, SubmissionAttachment)
        )
    engine.dispose()
    return result  # type: ignore[return-value]


def body(xml: bytes, files: dict[str, bytes], *, incomplete: bool = False) -> tuple[bytes, str]:
    fields = [("xml_submission_file", ("record.xml", xml, "text/xml"))]
    fields += [(name, (name, content, "image/jpeg")) for name, content in files.items()]
    if incomplete:
        fields.append(("*isIncomplete*", "yes"))
    return encode_multipart_formdata(fields)


def at_once(sends: list[tuple[str, tuple[bytes, str]]]) -> list[int]:
    """POST every (url, body) at the same moment; return the statuses in order."""
    barrier = threading.Barrier(len(sends))
    statuses: list[int | None] = [None] * len(sends)

    def send(index: int, url: str, payload: tuple[bytes, str]) -> None:
        data, content_type = payload
        barrier.wait()
        statuses[index] = requests.post(
            f"{url}/submission",
            data=data,
            headers={"Content-Type": content_type, "X-OpenRosa-Version": "1.0"},
            timeout=60,
        ).status_code

    threads = [
        threading.Thread(target=send, args=(i, url, payload))
        for i, (url, payload) in enumerate(sends)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses  # type: ignore[return-value]


def test_the_same_record_sent_to_two_servers_at_once_is_stored_once(two_servers):
    (a, b), pg_url, server, bucket = two_servers
    photo = jpeg(1, size=80_000)
    payload = body(record(new_instance_id(), audit=None), {PHOTO: photo})
    # A tablet retrying while its first attempt is still in flight, through a balancer.
    assert at_once([(a, payload), (b, payload)] * 3) == [201] * 6
    assert counts(pg_url) == (1, 1, 1)
    stored = server.objects(bucket, "collect/")
    sha256 = hashlib.sha256(photo).hexdigest()
    assert stored[f"collect/{sha256[:2]}/{sha256}"] == photo


def test_the_parts_of_a_split_upload_sent_to_two_servers_make_one_complete_record(two_servers):
    (a, b), pg_url, server, bucket = two_servers
    xml = record(new_instance_id(), members=(("Moussa", MEMBER_PHOTO),), audit=None)
    photo, member_photo = jpeg(2, size=60_000), jpeg(3, size=60_000)
    # Collect split the record in two posts; each reached a different server, at once.
    first = body(xml, {PHOTO: photo}, incomplete=True)
    last = body(xml, {MEMBER_PHOTO: member_photo})
    assert at_once([(a, first), (b, last)]) == [201, 201]
    assert counts(pg_url) == (1, 1, 2)
    engine = create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        expected, present = connection.execute(
            sa.select(SubmissionVersion.attachments_expected, SubmissionVersion.attachments_present)
        ).one()
    engine.dispose()
    assert (expected, present) == (2, 2)
    stored = server.objects(bucket, "collect/")
    for content in (photo, member_photo):
        sha256 = hashlib.sha256(content).hexdigest()
        assert stored[f"collect/{sha256[:2]}/{sha256}"] == content
