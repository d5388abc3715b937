"""Exports stream: bytes leave before the records are read, and rows are never accumulated.

No timings: the record source is instrumented instead. Each raw row the database hands over is
made weakly referenceable and tracked; at every chunk the export yields, the number of rows
still alive in memory is counted. It stays at one or two whatever the number of records, in
every format (the repeat tables of zips and workbooks go to temporary files, not to memory).
Every test runs on SQLite and PostgreSQL (COPY).
"""

from __future__ import annotations

import io
import weakref
import zipfile

import pytest

from server import db
from server.exports import csvout, geojson, source, xlsx
from tests.support import exports as X
from tests.support import factories

# Enough for deflate (zips, workbooks) to emit several blocks before the end.
RECORDS = 2000


class TrackedRow(list):
    """A raw row whose end of life can be observed (weakref.finalize)."""


class Alive:
    """How many tracked rows are in memory now."""

    def __init__(self) -> None:
        self.count = 0

    def track(self, row: TrackedRow) -> None:
        self.count += 1
        weakref.finalize(row, self._gone)

    def _gone(self) -> None:
        self.count -= 1


@pytest.fixture
def many(app):
    """The follow-up form with RECORDS records of two households each."""
    with app.app_context(), db.database().session() as db_session:
        project = factories.project(db_session)
        form = X.publish(db_session, project.id, X.SUIVI_V1)
        X.bulk_records(db_session, form, RECORDS, households=2)
        yield form


@pytest.fixture
def small_chunks(monkeypatch):
    """Yield every kilobyte instead of every 64 KiB, so that a small export has many chunks."""
    for module in (csvout, xlsx, geojson):
        monkeypatch.setattr(module, "CHUNK_BYTES", 1024)


@pytest.fixture
def alive(monkeypatch):
    """Track every raw row the database hands over; count those still alive."""
    rows = Alive()
    for name in ("_pg_rows", "_sqlite_rows"):
        original = getattr(source, name)

        def tracked(db_session, statement, _original=original):
            for row in _original(db_session, statement):
                wrapped = TrackedRow(row)
                rows.track(wrapped)
                yield wrapped

        monkeypatch.setattr(source, name, tracked)
    return rows


def test_the_first_bytes_leave_before_any_record_is_read(app, many):
    for fmt in ("csv", "csv.zip", "xlsx", "geojson"):
        export = X.prepare(app, many, fmt)
        first = next(export.chunks)
        assert first, fmt
        assert export.stats.records_read == 0, fmt
        export.chunks.close()


@pytest.mark.parametrize("fmt", ["csv", "csv.zip", "xlsx", "geojson"])
def test_chunks_flow_while_records_are_read_and_rows_never_pile_up(
    app, many, small_chunks, alive, fmt
):
    export = X.prepare(app, many, fmt)
    read_at_each_chunk = []
    most_alive = 0
    size = 0
    for chunk in export.chunks:
        size += len(chunk)
        read_at_each_chunk.append(export.stats.records_read)
        most_alive = max(most_alive, alive.count)
    assert export.stats.records_read == RECORDS
    # Chunks left while the records were still being read (deflate emits a block every few
    # hundred kilobytes of CSV; plain CSV and GeoJSON every kilobyte here)...
    midway = sum(1 for n in read_at_each_chunk if 0 < n < RECORDS)
    assert midway >= (2 if fmt in ("csv.zip", "xlsx") else 50)
    # ...and at no time were more than two records' rows held.
    assert most_alive <= 2
    assert size == export.stats.bytes_out


def test_zip_and_workbook_are_complete_after_streaming(app, many, small_chunks):
    archive = zipfile.ZipFile(io.BytesIO(X.export(app, many, "csv.zip")))
    rows = {name: archive.read(name).decode().count("\n") for name in archive.namelist()}
    assert rows == {
        "suivi.csv": RECORDS + 1,
        "suivi-household.csv": 2 * RECORDS + 1,
        "suivi-member.csv": 2 * RECORDS + 1,
    }
    import openpyxl

    workbook = openpyxl.load_workbook(io.BytesIO(X.export(app, many, "xlsx")), read_only=True)
    # Streamed sheets carry no <dimension> (it would have to come first): count the rows.
    assert [sum(1 for _ in workbook[name].iter_rows()) for name in workbook.sheetnames] == [
        RECORDS + 1,
        2 * RECORDS + 1,
        2 * RECORDS + 1,
    ]


def test_a_client_leaving_midway_ends_the_read_cleanly(app, many, small_chunks):
    export = X.prepare(app, many, "csv.zip")
    for _ in range(3):
        next(export.chunks)
    assert 0 < export.stats.records_read < RECORDS
    export.chunks.close()  # what the WSGI server does when the client disconnects
    # The database is free for the next export (PostgreSQL: the COPY was cancelled).
    assert X.csv_rows(X.export(app, many, "csv"))[-1][2].startswith("Enquêteur")


def test_the_http_response_starts_before_the_records_are_read(app, client, many, monkeypatch):
    with app.app_context(), db.database().session() as db_session:
        factories.user(db_session, "coord@example.org", role="manager", project_id=many.project_id)
    token = client.post(
        "/v1/sessions", json={"email": "coord@example.org", "password": factories.PASSWORD}
    ).json["token"]
    read = []
    original = source.iter_records

    def counting(*args, **kwargs):
        for row in original(*args, **kwargs):
            read.append(1)
            yield row

    monkeypatch.setattr(source, "iter_records", counting)
    response = client.get(
        f"/v1/projects/{many.project_id}/forms/suivi/submissions.csv.zip",
        headers={"Authorization": f"Bearer {token}"},
        buffered=False,
    )
    assert response.status_code == 200 and response.is_streamed
    body = iter(response.response)
    first = next(body)
    assert first.startswith(b"PK") and read == []
    rest = b"".join(body)
    response.close()
    assert len(read) == RECORDS
    assert zipfile.ZipFile(io.BytesIO(first + rest)).namelist()[0] == "suivi.csv"
