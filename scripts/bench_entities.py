"""Benchmark of entity lists as tablets download them: time, bytes, peak memory, against a query.

    .venv/bin/python scripts/bench_entities.py                    # 10,000 then 100,000 entities
    .venv/bin/python scripts/bench_entities.py --sizes 10000 --repeat 3

On a scratch PostgreSQL database (created next to MERIT_TEST_DATABASE_URL's, dropped at the
end), it creates a list with eight properties and loads entities with INSERT ... SELECT
generate_series (not measured), each with its current version (a label of about 30
characters, eight values; a tenth of the entities with a second version).

For each size it measures, in the same run, each in a child process that reports its time and
its peak resident memory (VmHWM):

* **baseline**: the same rows from one query (the current versions of the live entities,
  newest first, each property taken out of the JSON by PostgreSQL), read through a server-side
  cursor and written as CSV by Python's csv module: what any server must at least do;
* **list**: the server's own path, :func:`server.entities.listfile.chunks` (what a tablet's
  download streams), bytes hashed as they come;
* **manifest**: :func:`server.entities.listfile.fingerprint` twice in one process: the first
  call writes the file to hash it, the second finds the hash for the list's revision.

Nothing is asserted: these are figures for the README, against a baseline in the same run.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

ADMIN_PG = os.environ.get("MERIT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
SECRET = "bench-secret-key-not-for-production"  # noqa: S105 - a scratch database's
PROPERTIES = (
    "full_name",
    "code",
    "sex",
    "age_group",
    "site",
    "entry_date",
    "last_review_date",
    "risk_status",
)


def scratch_database() -> str:
    admin = sa.engine.make_url(ADMIN_PG.replace("postgresql://", "postgresql+psycopg://"))
    name = f"merit_bench_entities_{secrets.token_hex(4)}"
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


def make_app(url: str, data_dir: Path):
    from server.app import create_app

    return create_app(
        {
            "DATABASE_URL": url,
            "DATA_DIR": str(data_dir),
            "LOG_LEVEL": "WARNING",
            "FORMS_DIR": str(data_dir / "no-forms"),
            "SECRET_KEY": SECRET,
            "ODK_VALIDATE": False,
        }
    )


def prepare(url: str, data_dir: Path) -> int:
    """Migrate; create a project and its list with its properties; return the list's id."""
    from server import db, migrate
    from server.entities import services
    from server.projects.models import Project

    migrate.upgrade(url)
    app = make_app(url, data_dir)
    with app.app_context(), db.database().session() as db_session:
        project = Project(name="Benchmark")
        db_session.add(project)
        db_session.commit()
        dataset = services.create_dataset(db_session, project.id, "participants", actor_id=None)
        for name in PROPERTIES:
            services.add_property(db_session, dataset, name, actor_id=None)
        dataset_id = dataset.id
    app.extensions["merit.db"].dispose()
    return dataset_id


def load(url: str, dataset_id: int, start: int, count: int) -> float:
    """Add ``count`` entities (numbered from ``start``) with their versions; return seconds."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    values = ", ".join(
        f"'{name}', {expression}"
        for name, expression in zip(
            PROPERTIES,
            (
                "'Participant ' || @n",
                "'P-' || lpad(@n::text, 6, '0')",
                "(ARRAY['f','m'])[1 + @n % 2]",
                "(ARRAY['15-17','18-24','25-34','35+'])[1 + @n % 4]",
                "(ARRAY['Ségou','Mopti','Bamako','Kayes','Sikasso'])[1 + @n % 5]",
                "'2026-01-' || lpad((1 + @n % 28)::text, 2, '0')",
                "'2026-03-' || lpad((1 + @n % 28)::text, 2, '0')",
                "(ARRAY['low','medium','high'])[1 + @n % 3]",
            ),
            strict=True,
        )
    )
    began = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                f"""
                WITH made AS (
                  INSERT INTO entities (dataset_id, uuid, created_at)
                  SELECT :dataset, gen_random_uuid()::text, now()
                  FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS n
                  RETURNING id
                )
                INSERT INTO entity_versions
                  (entity_id, version, current, label, data, created_at)
                SELECT id, 1 + (id % 10 = 0)::int, true,
                       'P-' || lpad(id::text, 6, '0') || ' Participant ' || id,
                       jsonb_build_object({values.replace("@n", "id")}),
                       now()
                FROM made
                """  # noqa: S608 - the values are this script's constants
            ),
            {"dataset": dataset_id, "first": start, "last": start + count - 1},
        )
        connection.execute(
            sa.text("UPDATE datasets SET revision = revision + 1 WHERE id = :id"),
            {"id": dataset_id},
        )
        connection.execute(sa.text("ANALYZE entities; ANALYZE entity_versions"))
    engine.dispose()
    return time.perf_counter() - began


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(url: str, data_dir: str, dataset_id: int, what: str) -> None:
    """Measure one way of writing the list; print its figures as JSON."""
    from server import db
    from server.entities import listfile
    from server.entities.models import Dataset

    app = make_app(url, Path(data_dir))
    figures: dict = {}
    with app.app_context(), db.database().session(readonly=True) as reader:
        dataset = reader.get(Dataset, dataset_id)
        began = time.perf_counter()
        md5, size, rows = hashlib.md5(), 0, 0
        if what == "baseline":
            columns = ", ".join(f"v.data->>'{name}'" for name in PROPERTIES)
            result = reader.connection().exec_driver_sql(
                "SELECT e.uuid, v.label, v.version, v.version, '', " + columns + " "
                "FROM entities e JOIN entity_versions v ON v.entity_id = e.id AND v.current "
                f"WHERE e.dataset_id = {int(dataset_id)} AND e.deleted_at IS NULL "
                "ORDER BY e.id DESC",
                execution_options={"stream_results": True, "yield_per": 2000},
            )
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(["name", "label", "__version", "__trunkVersion", "__branchId"])
            for row in result:
                writer.writerow(row)
                rows += 1
                if buffer.tell() >= 256 * 1024:
                    chunk = buffer.getvalue().encode()
                    md5.update(chunk)
                    size += len(chunk)
                    buffer.seek(0)
                    buffer.truncate()
            chunk = buffer.getvalue().encode()
            md5.update(chunk)
            size += len(chunk)
        elif what == "list":
            for chunk in listfile.chunks(reader, dataset):
                md5.update(chunk)
                size += len(chunk)
        else:  # manifest: the first hash, then the cached one
            _hash, size = listfile.fingerprint(reader, dataset)
            figures["first"] = time.perf_counter() - began
            again = time.perf_counter()
            listfile.fingerprint(reader, dataset)
            figures["cached"] = time.perf_counter() - again
        figures.update(seconds=time.perf_counter() - began, bytes=size, peak_mb=_peak_mb())
    print(json.dumps(figures))


def run_child(url: str, data_dir: Path, dataset_id: int, what: str) -> dict:
    answer = subprocess.run(
        [sys.executable, __file__, "--child", url, str(data_dir), str(dataset_id), what],
        capture_output=True,
        text=True,
        check=False,
    )
    if answer.returncode != 0:
        raise RuntimeError(answer.stderr[-3000:])
    return json.loads(answer.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measure (best kept)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, data_dir, dataset_id, what = args.child
        child(url, data_dir, int(dataset_id), what)
        return
    url = scratch_database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp)
            dataset_id = prepare(url, data_dir)
            loaded = 0
            print(
                f"{'entities':>9} {'way':>9} {'seconds':>8} {'x base':>7} {'MB out':>7} "
                f"{'rows/s':>9} {'peak MB':>8}  notes"
            )
            for size in sorted(args.sizes):
                took = load(url, dataset_id, loaded + 1, size - loaded)
                loaded = size
                best: dict[str, dict] = {}
                for _ in range(args.repeat):
                    for what in ("baseline", "list", "manifest"):
                        got = run_child(url, data_dir, dataset_id, what)
                        if what not in best or got["seconds"] < best[what]["seconds"]:
                            best[what] = got
                base = best["baseline"]["seconds"]
                for what in ("baseline", "list", "manifest"):
                    got = best[what]
                    note = f"loaded in {took:.1f} s" if what == "baseline" else ""
                    if what == "manifest":
                        note = f"cached hash {got['cached'] * 1000:.1f} ms"
                    print(
                        f"{size:>9,} {what:>9} {got['seconds']:>8.2f} "
                        f"{got['seconds'] / base:>7.2f} {got['bytes'] / 1e6:>7.1f} "
                        f"{size / got['seconds']:>9,.0f} {got['peak_mb']:>8.0f}  {note}"
                    )
    finally:
        drop_database(url)


if __name__ == "__main__":
    main()
