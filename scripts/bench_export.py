"""Benchmark of exports: records per second, time to first byte and peak memory, against COPY.

    .venv/bin/python scripts/bench_export.py                          # 100,000 then 1,000,000
    .venv/bin/python scripts/bench_export.py --sizes 100000 --formats csv csv.zip xlsx
    .venv/bin/python scripts/bench_export.py --keep                   # keep the scratch database

On a scratch PostgreSQL database (created next to MERIT_TEST_DATABASE_URL's, dropped at the
end), it publishes a sixty-question form with a repeat through the forms service, then loads
records with INSERT ... SELECT generate_series (not measured): realistic documents (about 3 KB
of JSON, so PostgreSQL stores them compressed, as it does real ones), a 5 KB XML each, two
repeat instances per record.

For each size it measures, in the same run:

* PostgreSQL alone: ``COPY (SELECT ...) TO STDOUT`` of exactly the rows the export asks for
  (the exporter's own query and planner settings: fields extracted, metadata, repeats' JSON),
  read by a client that only counts bytes: the rate of the database itself, the baseline;
* each export format, in a child process (``merit export``'s code path: the service, a read
  session, chunks written to a file), which reports its time to first byte, its duration and
  its peak resident memory (VmHWM, the kernel's high-water mark of the process).

It prints records per second, the ratio to COPY, first byte and peak memory. Nothing is
asserted: these are figures for the README, measured against a baseline in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
FORM_ID = "bench"

# The sixty questions: (group, XLSForm type, count).
QUESTIONS = (
    ("identification", "text", 10),
    ("identification", "integer", 5),
    ("menage", "integer", 10),
    ("menage", "decimal", 8),
    ("menage", "date", 5),
    ("perceptions", "select_one likert", 10),
    ("perceptions", "select_multiple needs", 3),
    ("perceptions", "dateTime", 3),
    ("perceptions", "geopoint", 1),
    ("perceptions", "text", 5),
)
MEMBER = (
    ("member_name", "text"),
    ("member_age", "integer"),
    ("member_sex", "select_one sex"),
    ("member_school", "select_one yes_no"),
    ("member_income", "decimal"),
)


def questions() -> list[tuple[str, str, str]]:
    """Return (group, name, XLSForm type) of the sixty questions, in form order."""
    out = []
    for group, kind, count in QUESTIONS:
        for _ in range(count):
            out.append((group, f"q{len(out) + 1:02d}", kind))
    return out


def xlsform() -> str:
    """The benchmark form as a Markdown XLSForm."""
    rows = ["| survey |", "| | type | name | label::Français (fr) | label::English (en) |"]
    current = None
    for group, name, kind in questions():
        if group != current:
            if current is not None:
                rows.append("| | end group | | | |")
            rows.append(f"| | begin group | {group} | {group} | {group} |")
            current = group
        rows.append(f"| | {kind} | {name} | Question {name} | Question {name} |")
    rows.append("| | end group | | | |")
    rows.append("| | begin repeat | member | Membre | Member |")
    rows += [f"| | {kind} | {name} | {name} | {name} |" for name, kind in MEMBER]
    rows.append("| | end repeat | | | |")
    rows += [
        "| choices |",
        "| | list_name | name | label::Français (fr) | label::English (en) |",
        *(f"| | likert | {n} | {n} | {n} |" for n in "12345"),
        *(f"| | needs | {n} | {n} | {n} |" for n in ("eau", "nourriture", "abri", "sante")),
        "| | sex | f | Féminin | Female |",
        "| | sex | m | Masculin | Male |",
        "| | yes_no | yes | Oui | Yes |",
        "| | yes_no | no | Non | No |",
        "| settings |",
        "| | form_id | version | form_title | default_language |",
        f"| | {FORM_ID} | 1 | Benchmark | Français (fr) |",
    ]
    return "\n".join(rows) + "\n"


def _value_sql(kind: str, number: int) -> str:
    """SQL for a realistic answer of a question, varying with the record number g."""
    if kind == "text":
        return f"'Réponse libre numéro ' || g || ' à la question {number}'"
    if kind == "integer":
        return f"((g * {number * 7 + 3}) % 97)::text"
    if kind == "decimal":
        return f"round(((g % 1000) * 1.37 + {number})::numeric, 2)::text"
    if kind == "date":
        return f"to_char(date '2024-01-01' + ((g + {number}) % 300), 'YYYY-MM-DD')"
    if kind == "dateTime":
        return (
            "to_char(timestamp '2024-05-07 08:00' + ((g % 5000) || ' minutes')::interval, "
            "'YYYY-MM-DD\"T\"HH24:MI:SS.MS') || '+00:00'"
        )
    if kind.startswith("select_one"):
        return f"((g + {number}) % 5 + 1)::text"
    if kind.startswith("select_multiple"):
        return "(ARRAY['eau', 'nourriture abri', 'sante', 'eau sante abri'])[g % 4 + 1]"
    if kind == "geopoint":
        return (
            "(12 + (g % 1000) / 1000.0)::text || ' ' || (-8 - (g % 500) / 1000.0)::text || ' 350 5'"
        )
    raise ValueError(kind)


def document_sql() -> str:
    """SQL building a record's document (JSONB) from its number g."""
    groups: dict[str, list[str]] = {}
    for group, name, kind in questions():
        groups.setdefault(group, []).append(
            f"'{name}', {_value_sql(kind.split()[0], int(name[1:]))}"
        )
    member = (
        "jsonb_build_object('member_name', 'Membre ' || g || '-{i}', 'member_age', "
        "((g + {i}) % 80)::text, 'member_sex', (ARRAY['f','m'])[(g + {i}) % 2 + 1], "
        "'member_school', (ARRAY['yes','no'])[g % 2 + 1], 'member_income', "
        "round(((g % 700) * 2.1)::numeric, 2)::text)"
    )
    parts = [
        f"jsonb_build_object('{g}', jsonb_build_object({', '.join(v)}))" for g, v in groups.items()
    ]
    members = f"{member.format(i=1)}, {member.format(i=2)}"
    parts.append(f"jsonb_build_object('member', jsonb_build_array({members}))")
    parts.append("jsonb_build_object('meta', jsonb_build_object('instanceID', s.instance_id))")
    return " || ".join(parts)


def scratch_database() -> str:
    admin = sa.engine.make_url(ADMIN_PG.replace("postgresql://", "postgresql+psycopg://"))
    name = f"merit_bench_export_{secrets.token_hex(4)}"
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


def prepare(url: str, data_dir: Path) -> tuple[int, int, int]:
    """Migrate; create a project, a tablet and the form (published); return the three ids."""
    from server import db, migrate
    from server.auth import app_users
    from server.forms import services as forms
    from server.projects.models import Project
    from tests.fixtures.forms import workbooks

    migrate.upgrade(url)
    app = make_app(url, data_dir)
    with app.app_context(), db.database().session() as db_session:
        project = Project(name="Benchmark")
        db_session.add(project)
        db_session.commit()
        app_user, _token = app_users.create(
            db_session, project.id, "Tablette", secret_key=SECRET, by=None
        )
        db_session.commit()
        upload = forms.Upload(
            data=workbooks.xlsx(xlsform()), filename="bench.xlsx", content_type=workbooks.XLSX_TYPE
        )
        form = forms.create_form(db_session, project.id, upload, publish=True, ignore_warnings=True)
        ids = (project.id, form.id, app_user.actor_id)
    app.extensions["merit.db"].dispose()
    return ids


def load(url: str, form_id: int, submitter_id: int, start: int, count: int) -> float:
    """Insert records start+1 .. start+count (not measured); return the seconds it took."""
    from server.db import create_engine

    began = time.perf_counter()
    engine = create_engine(url)
    with engine.begin() as connection:
        version_id = connection.execute(
            sa.text("SELECT current_version_id FROM forms WHERE id = :f"), {"f": form_id}
        ).scalar()
        # The trigger that numbers records one by one (``seq``, for the paging cursors) would
        # update its counter row once per row, each time behind a longer chain of versions of
        # that row (quadratic in one transaction): the numbers are given here instead.
        connection.execute(sa.text("ALTER TABLE submissions DISABLE TRIGGER submissions_seq"))
        batch = 100_000
        for first in range(start + 1, start + count + 1, batch):
            last = min(first + batch - 1, start + count)
            connection.execute(
                sa.text(
                    "INSERT INTO submissions (form_id, draft, instance_id, submitter_id,"
                    " device_id, created_at, seq) "
                    "SELECT :f, false, 'uuid:' || md5('bench' || g)::uuid, :a,"
                    " 'collect:bench' || (g % 300),"
                    " now() - ((2000000 - g) || ' seconds')::interval, g "
                    "FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) g"
                ),
                {"f": form_id, "a": submitter_id, "first": first, "last": last},
            )
            connection.execute(
                sa.text(
                    "INSERT INTO submission_versions (submission_id, form_id, draft,"
                    " form_version_id, instance_id, current, xml, xml_sha256, document,"
                    " instance_name, created_at, attachments_expected, attachments_present,"
                    " encrypted) "
                    "SELECT s.id, s.form_id, false, :v, s.instance_id, true,"
                    " '<data id=\"bench\">' || repeat('<q>réponse ' || g || '</q>', 180)"
                    " || '</data>', md5(s.instance_id), "
                    + document_sql()  # our own SQL, built from the constants above
                    + ", 'Fiche ' || g, s.created_at, 0, 0, false "
                    "FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) g "
                    "JOIN submissions s ON s.form_id = :f"
                    " AND s.instance_id = 'uuid:' || md5('bench' || g)::uuid"
                ),
                {"f": form_id, "v": version_id, "first": first, "last": last},
            )
        connection.execute(
            sa.text(
                "INSERT INTO submission_sequences (form_id, last_seq) VALUES (:f, :n) "
                "ON CONFLICT (form_id) DO UPDATE SET last_seq = EXCLUDED.last_seq"
            ),
            {"f": form_id, "n": start + count},
        )
        connection.execute(sa.text("ALTER TABLE submissions ENABLE TRIGGER submissions_seq"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM ANALYZE"))
        # Write the load out now, not while the next measurement runs.
        connection.execute(sa.text("CHECKPOINT"))
    engine.dispose()
    return time.perf_counter() - began


def existing(url: str) -> tuple[int, int, int, int]:
    """Return the project, form, submitter and record count of a kept scratch database."""
    from server.db import create_engine

    engine = create_engine(url)
    with engine.connect() as connection:
        project_id, form_id = connection.execute(
            sa.text("SELECT project_id, id FROM forms WHERE xml_form_id = :f"), {"f": FORM_ID}
        ).one()
        submitter_id = connection.execute(sa.text("SELECT actor_id FROM app_users")).scalar()
        count = connection.execute(
            sa.text("SELECT count(*) FROM submissions WHERE form_id = :f"), {"f": form_id}
        ).scalar()
    engine.dispose()
    return project_id, form_id, submitter_id, count


def copy_baseline(url: str, data_dir: Path, project_id: int) -> dict:
    """COPY the exporter's own query TO STDOUT; return rows, bytes and seconds."""
    from server import db
    from server.exports import layout as L
    from server.exports import services, source
    from server.exports.options import ExportOptions
    from server.forms.services import find_form

    app = make_app(url, data_dir)
    with app.app_context(), db.database().session(readonly=True) as db_session:
        source.begin_snapshot(db_session)  # the export's transaction and planner settings
        form = find_form(db_session, project_id, FORM_ID)
        layout = services.load_layout(db_session, form)
        options = ExportOptions(pii="plain")
        plan = L.build_plan(layout, options, "csv")
        where = source.conditions(form, layout, options, "postgresql")
        statement = source.records_query(plan, where, "postgresql")
        connection = db_session.connection()
        compiled = statement.compile(
            dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
        )
        driver = connection.connection.driver_connection
        began = time.perf_counter()
        first = None
        size = rows = 0
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY ({compiled}) TO STDOUT (FORMAT csv)", compiled.params) as copy,
        ):
            for block in copy:
                if first is None:
                    first = time.perf_counter() - began
                size += len(block)
                rows += 1
        seconds = time.perf_counter() - began
    app.extensions["merit.db"].dispose()
    return {"rows": rows, "bytes": size, "seconds": seconds, "first_byte": first}


def child(url: str, data_dir: str, project_id: int, fmt: str, output: str) -> None:
    """Run one export as ``merit export`` does; print its figures as JSON."""
    from server import db
    from server.exports import services
    from server.exports.options import ExportOptions
    from server.forms.services import find_form

    app = make_app(url, Path(data_dir))
    with app.app_context():
        began = time.perf_counter()
        with db.database().session(readonly=True) as reader:
            form = find_form(reader, project_id, FORM_ID)
            export = services.prepare(
                reader, form, fmt, ExportOptions(pii="plain"), secret_key=SECRET
            )
            first = None
            with open(output, "wb") as target:
                for chunk in export.chunks:
                    if first is None and chunk:
                        first = time.perf_counter() - began
                    target.write(chunk)
        seconds = time.perf_counter() - began
    peak_kb = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak_kb = int(line.split()[1])
    print(
        json.dumps(
            {
                "records": export.stats.records_read,
                "bytes": export.stats.bytes_out,
                "seconds": seconds,
                "first_byte": first,
                "peak_mb": peak_kb / 1024,
            }
        )
    )


def run_child(url: str, data_dir: Path, project_id: int, fmt: str) -> dict:
    output = data_dir / f"export.{fmt}"
    answer = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            url,
            str(data_dir),
            str(project_id),
            fmt,
            str(output),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if answer.returncode != 0:
        raise RuntimeError(answer.stderr[-3000:])
    output.unlink(missing_ok=True)
    return json.loads(answer.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--formats", nargs="+", default=["csv", "csv.zip", "xlsx"])
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--database",
        help="reuse a scratch database kept by an earlier run (--keep): records already "
        "loaded are not loaded again",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measure (best kept)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, data_dir, project_id, fmt, output = args.child
        child(url, data_dir, int(project_id), fmt, output)
        return

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")  # fmt: skip
    url = args.database or scratch_database()
    data_dir = Path(tempfile.mkdtemp(prefix="merit-bench-export-"))
    try:
        if args.database:
            project_id, form_id, submitter_id, loaded = existing(url)
        else:
            project_id, form_id, submitter_id = prepare(url, data_dir)
            loaded = 0
        results = []
        for size in sorted(args.sizes):
            if size > loaded:
                took = load(url, form_id, submitter_id, loaded, size - loaded)
                loaded = size
                print(f"\n{size:,} records loaded in {took:.0f} s (not measured)")
            elif size < loaded:
                print(f"\n{size:,}: the database holds {loaded:,} records already; skipped")
                continue
            else:
                print(f"\n{size:,} records")
            print(f"  load average before: {os.getloadavg()[0]:.1f}")
            copy_baseline(url, data_dir, project_id)  # warm the cache for both
            copy = min(
                (copy_baseline(url, data_dir, project_id) for _ in range(args.repeat)),
                key=lambda figures: figures["seconds"],
            )
            copy_rate = copy["rows"] / copy["seconds"]
            print(
                f"  COPY (SELECT the export's rows) TO STDOUT: {copy_rate:,.0f} records/s, "
                f"first byte {copy['first_byte'] * 1000:.0f} ms, {copy['bytes'] / 1e6:,.0f} MB"
            )
            for fmt in args.formats:
                if fmt == "xlsx" and size > 1_048_575:
                    print(f"  {fmt}: skipped (Excel's sheet limit; the export would split it)")
                    continue
                figures = min(
                    (run_child(url, data_dir, project_id, fmt) for _ in range(args.repeat)),
                    key=lambda figures: figures["seconds"],
                )
                rate = figures["records"] / figures["seconds"]
                results.append((size, fmt, figures, copy_rate))
                print(
                    f"  {fmt:8} {rate:>9,.0f} records/s  ({rate / copy_rate:.2f} of COPY)  "
                    f"first byte {figures['first_byte'] * 1000:,.0f} ms  "
                    f"peak memory {figures['peak_mb']:,.0f} MB  "
                    f"{figures['bytes'] / 1e6:,.0f} MB in {figures['seconds']:.1f} s"
                )
    finally:
        if args.keep:
            print(f"\nscratch database kept: {url}")
        else:
            drop_database(url)


if __name__ == "__main__":
    main()
