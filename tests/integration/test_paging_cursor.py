"""Cursor paging while records keep arriving: none skipped, none repeated.

The danger (central#1074): on PostgreSQL a record's id is drawn when it is inserted, not when
it commits, so "id > last seen" skips a record that commits after a larger id was read. The
cursor is ``submissions.seq``, which a trigger hands out in commit order (migration 0002).
These tests hold transactions open on purpose and read meanwhile, on both databases.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.db import create_engine, utcnow
from server.submissions import paging
from server.submissions.models import Submission, SubmissionVersion
from tests.conftest import make_app
from tests.support import databases, factories
from tests.support.openrosa import FORM_ID, new_instance_id, publish_form, record
from tests.support.servers import ServerProcess, server_env

S = Submission.__table__
V = SubmissionVersion.__table__


@pytest.fixture
def form(db_session):
    """A published form; returns (form id, form version id)."""
    project = factories.project(db_session)
    published = publish_form(db_session, project.id)
    return published.id, published.current_version_id


def insert_record(
    connection: sa.Connection, form_id: int, version_id: int, instance_id: str
) -> int:
    """Insert a record the way intake does (submission, then its current version)."""
    now = utcnow()
    submission_id = connection.execute(
        sa.insert(S)
        .values(form_id=form_id, draft=False, instance_id=instance_id, created_at=now)
        .returning(S.c.id)
    ).scalar_one()
    connection.execute(
        sa.insert(V).values(
            submission_id=submission_id,
            form_id=form_id,
            draft=False,
            form_version_id=version_id,
            instance_id=instance_id,
            current=True,
            xml="<data/>",
            xml_sha256="0" * 64,
            created_at=now,
        )
    )
    return submission_id


def follow(engine: sa.Engine, form_id: int) -> Callable[[], list[str]]:
    """Return a reader that, on each call, reads every page after its cursor."""
    state: dict[str, paging.Cursor | None] = {"cursor": None}

    def read() -> list[str]:
        seen = []
        with Session(engine) as db_session:
            while True:
                found = paging.page(db_session, form_id, cursor=state["cursor"], limit=3)
                seen += [row.submission.instance_id for row in found.rows]
                state["cursor"] = found.next_cursor
                if not found.more:
                    return seen

    return read


def test_every_record_gets_a_seq_in_the_order_of_commits(database_url, form):
    engine = create_engine(database_url, poolclass=sa.pool.NullPool)
    form_id, version_id = form
    with engine.begin() as connection:
        ids = [insert_record(connection, form_id, version_id, new_instance_id()) for _ in range(3)]
    with engine.connect() as connection:
        seqs = list(
            connection.execute(sa.select(S.c.seq).where(S.c.id.in_(ids)).order_by(S.c.id)).scalars()
        )
    assert None not in seqs and seqs == sorted(seqs) and len(set(seqs)) == 3
    engine.dispose()


def test_a_record_committed_late_is_not_skipped_postgresql(pg_url, tmp_path):
    """The race itself, step by step: an insert in flight holds back every later one."""
    databases.reset(pg_url)
    engine = create_engine(pg_url, poolclass=sa.pool.NullPool)
    app = make_app(pg_url, tmp_path)
    with app.app_context(), Session(engine) as db_session:
        project = factories.project(db_session)
        published = publish_form(db_session, project.id)
        form_id, version_id = published.id, published.current_version_id
    app.extensions["merit.db"].dispose()
    read = follow(engine, form_id)
    with engine.begin() as connection:
        first = new_instance_id()
        insert_record(connection, form_id, version_id, first)
    assert read() == [first]

    slow = engine.connect()
    slow_tx = slow.begin()
    late = new_instance_id()
    late_id = insert_record(slow, form_id, version_id, late)  # drawn now, committed later
    quick = new_instance_id()
    quick_ids: list[int] = []
    quick_pid: list[int] = []

    def insert_quickly() -> None:
        with engine.begin() as connection:
            quick_pid.append(connection.execute(sa.text("SELECT pg_backend_pid()")).scalar())
            quick_ids.append(insert_record(connection, form_id, version_id, quick))

    worker = threading.Thread(target=insert_quickly)
    worker.start()
    # Wait (without a time limit on the outcome) until the second insert is seen waiting for
    # the first one's lock: with plain ids it would already be committed and readable.
    with engine.connect() as observer:
        while True:
            if quick_pid:
                waiting = observer.execute(
                    sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": quick_pid[0]},
                ).scalar()
                if waiting == "Lock":
                    break
            assert worker.is_alive(), "the second insert finished while the first was open"
            observer.execute(sa.text("SELECT pg_sleep(0.01)"))
    assert read() == []  # nothing readable yet: the cursor does not move past the gap
    slow_tx.commit()
    slow.close()
    worker.join()
    assert late_id < quick_ids[0]
    assert read() == [late, quick]
    assert read() == []
    engine.dispose()


def test_cursor_readers_see_each_record_once_while_writers_commit_out_of_order(database_url, form):
    """Writers hold their transactions open for random times; a reader pages all along."""
    engine = create_engine(database_url, pool_size=12, max_overflow=0)
    form_id, version_id = form
    read = follow(engine, form_id)
    written: list[str] = []
    done = threading.Event()
    rng = random.Random(7)
    plan = [[new_instance_id() for _ in range(6)] for _ in range(6)]
    pauses = [[rng.choice((0, 0.002, 0.01, 0.03)) for _ in batch] for batch in plan]
    errors: list[BaseException] = []
    sleep_sql = "SELECT pg_sleep(:s)" if engine.dialect.name == "postgresql" else "SELECT :s"

    def write(batch: list[str], waits: list[float]) -> None:
        try:
            for instance_id, wait in zip(batch, waits, strict=True):
                with engine.begin() as connection:
                    insert_record(connection, form_id, version_id, instance_id)
                    # Keep the transaction open a while after the id and seq were drawn.
                    connection.execute(sa.text(sleep_sql), {"s": wait})
                written.append(instance_id)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    seen: list[str] = []

    def keep_reading() -> None:
        while not done.is_set():
            seen.extend(read())

    writers = [
        threading.Thread(target=write, args=(batch, waits))
        for batch, waits in zip(plan, pauses, strict=True)
    ]
    reader = threading.Thread(target=keep_reading)
    reader.start()
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    done.set()
    reader.join()
    seen.extend(read())
    assert errors == []
    assert len(seen) == len(set(seen)), "a record was read twice"
    assert sorted(seen) == sorted(written), "a record was skipped"
    engine.dispose()


# ---- over HTTP, against a real server --------------------------------------------------------


@pytest.fixture(scope="module")
def live(module_database_url, tmp_path_factory) -> Iterator[dict]:
    tmp_path = tmp_path_factory.mktemp("paging-live")
    engine = create_engine(module_database_url, poolclass=sa.pool.NullPool)
    app = make_app(module_database_url, tmp_path)
    with app.app_context(), Session(engine) as db_session:
        project = factories.project(db_session)
        publish_form(db_session, project.id)
        factories.user(db_session, "coord@example.org", role="manager", project_id=project.id)
        project_id = project.id
    app.extensions["merit.db"].dispose()
    engine.dispose()
    env = server_env(
        module_database_url,
        tmp_path,
        WORKERS="2",
        THREADS="8",
    )
    with ServerProcess(env, log_path=tmp_path / "server.log") as server:
        api = requests.Session()
        token = api.post(
            f"{server.url}/v1/sessions",
            json={"email": "coord@example.org", "password": factories.PASSWORD},
        ).json()["token"]
        api.headers["Authorization"] = f"Bearer {token}"
        yield {"api": api, "url": f"{server.url}/v1/projects/{project_id}/forms/{FORM_ID}"}


@pytest.mark.slow
def test_a_sync_client_following_next_links_gets_every_record_once(live):
    """Eight clients post records over HTTP while a sync client follows the cursor."""
    api, url = live["api"], live["url"]
    posted: list[str] = []
    lock = threading.Lock()
    failures: list[str] = []

    def post_some() -> None:
        poster = requests.Session()
        poster.headers.update(api.headers)
        for _ in range(8):
            instance_id = f"uuid:{uuid.uuid4()}"
            answer = poster.post(
                url + "/submissions",
                data=record(instance_id, photo=None, audit=None),
                headers={"Content-Type": "application/xml"},
                timeout=60,
            )
            if answer.status_code != 200:
                failures.append(answer.text)
            with lock:
                posted.append(instance_id)

    seen: list[str] = []
    link = f"{url}/submissions?cursor=&limit=5"
    posters = [threading.Thread(target=post_some) for _ in range(8)]
    for poster in posters:
        poster.start()

    def follow_link() -> None:
        nonlocal link
        page = api.get(link, timeout=60)
        assert page.status_code == 200, page.text
        seen.extend(s["instanceId"] for s in page.json())
        link = page.links["next"]["url"]

    while any(p.is_alive() for p in posters):
        follow_link()
    for poster in posters:
        poster.join()
    for _ in range(len(posted)):  # drain what is left, one page at a time
        before = len(seen)
        follow_link()
        if len(seen) == before:
            break
    assert failures == []
    assert len(seen) == len(set(seen))
    assert sorted(seen) == sorted(posted)
