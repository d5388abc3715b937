"""Measure how fast attachments are saved, on the local folder and on S3, in the same run.

    .venv/bin/python scripts/bench_storage.py                   # 200 KB photos, local and S3
    .venv/bin/python scripts/bench_storage.py --count 2000 --threads 1 8
    AWS_ENDPOINT_URL_S3=http://minio:9000 ... \\
        .venv/bin/python scripts/bench_storage.py --s3-url s3://bench-bucket/run1

Each save is what intake does with a photo: stage it (hash, fsync), make it durable in the store,
insert its catalogue row and commit. Photos are random bytes (they do not compress, like JPEGs),
each distinct, so nothing is deduplicated. Without ``--s3-url`` the S3 figures come from moto's
S3 server in a local process over HTTP: they measure this server's S3 path (boto3, checksums,
HTTP) rather than a production object store, whose latency will dominate instead.
The database is SQLite in a temporary folder unless ``--database-url`` is given.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server import db, migrate  # noqa: E402
from server.app import create_app  # noqa: E402
from server.storage import services  # noqa: E402


def save_all(app, photos: list[bytes], threads: int) -> float:
    """Save every photo with ``threads`` threads; return the seconds it took."""
    chunks = [photos[n::threads] for n in range(threads)]
    failures: list[BaseException] = []

    def work(mine: list[bytes]) -> None:
        try:
            with app.app_context(), db.database().session() as db_session:
                for data in mine:
                    staged = services.stage_stream(io.BytesIO(data))
                    try:
                        services.save(db_session, staged)
                        db_session.commit()
                    finally:
                        staged.discard()
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(c,)) for c in chunks]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise failures[0]
    return elapsed


def bench(
    name: str,
    storage_url: str,
    database_url: str | None,
    workdir: Path,
    make_photos: Callable[[], list[bytes]],
    thread_counts: list[int],
) -> list[tuple[str, int, int, float, float]]:
    """Run the saves for one backend; return (backend, threads, photos, blobs/s, MB/s) rows."""
    rows = []
    for threads in thread_counts:
        data_dir = workdir / f"{name}-{threads}"
        url = database_url or f"sqlite:///{data_dir / 'bench.db'}"
        data_dir.mkdir(parents=True)
        migrate.upgrade(url)
        app = create_app(
            {
                "DATA_DIR": str(data_dir),
                "DATABASE_URL": url,
                "STORAGE_URL": storage_url
                if "{n}" not in storage_url
                else storage_url.format(n=threads),
                "SECRET_KEY": "bench",
                "LOG_JSON": False,
                "LOG_LEVEL": "WARNING",
            }
        )
        photos = make_photos()
        seconds = save_all(app, photos, threads)
        with app.app_context():
            assert services.spool().is_empty(), "the store failed during the benchmark"
        app.extensions["merit.db"].dispose()
        total = sum(len(p) for p in photos)
        rows.append((name, threads, len(photos), len(photos) / seconds, total / seconds / 1e6))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=500, help="photos per run (500)")
    parser.add_argument("--size", type=int, default=200_000, help="bytes per photo (200,000)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8], help="threads (1 8)")
    parser.add_argument("--s3-url", help="an existing bucket (s3://bucket/prefix) instead of moto")
    parser.add_argument("--database-url", help="database instead of a temporary SQLite file")
    args = parser.parse_args()

    def make_photos() -> list[bytes]:
        return [os.urandom(args.size) for _ in range(args.count)]

    rows = []
    with tempfile.TemporaryDirectory(prefix="merit-bench-") as temp:
        workdir = Path(temp)
        rows += bench(
            "local",
            str(workdir / "blobs-{n}"),
            args.database_url,
            workdir,
            make_photos,
            args.threads,
        )
        if args.s3_url:
            rows += bench("s3", args.s3_url, args.database_url, workdir, make_photos, args.threads)
        else:
            from tests.support.s3 import S3Server

            with S3Server(workdir / "moto") as server:
                os.environ.update(server.env)
                bucket = server.create_bucket("merit-bench")
                url = f"s3://{bucket}/run-{{n}}"
                rows += bench(
                    "s3 (moto)", url, args.database_url, workdir, make_photos, args.threads
                )

    print(
        f"{args.count} photos of {args.size:,} bytes; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, database {'SQLite' if not args.database_url else 'given'}"
    )
    print(f"{'backend':<10} {'threads':>7} {'photos':>7} {'blobs/s':>9} {'MB/s':>7}")
    for backend, threads, count, per_second, megabytes in rows:
        print(f"{backend:<10} {threads:>7} {count:>7} {per_second:>9.1f} {megabytes:>7.1f}")


if __name__ == "__main__":
    main()
