"""``merit storage``: check, migrate, verify, and look after the spool.

    merit storage check               can the store and the spool be reached and written?
    merit storage migrate --to URL    copy every blob to another store (resumable)
    merit storage verify [--quick]    every catalogued blob present, with the right hash
    merit storage spool               what waits in the spool
    merit storage drain               move what waits in the spool to the store, now

Each exits non-zero when something is wrong, so they fit in cron jobs and deploy scripts.
"""

from __future__ import annotations

import datetime as dt
import sys

import click
from flask.cli import with_appcontext

from server.storage import operations, services
from server.storage.base import BlobStore, StorageError


def describe(store: BlobStore) -> str:
    """Name a store for an operator, without credentials."""
    bucket = getattr(store, "bucket", None)
    if bucket is not None:
        endpoint = store.client.meta.endpoint_url  # type: ignore[attr-defined]
        prefix = getattr(store, "prefix", "")
        return f"s3://{bucket}/{prefix} at {endpoint}"
    return f"folder {getattr(store, 'root', store)}"


@click.group("storage")
def storage() -> None:
    """Attachment storage: check, migrate, verify, spool."""


@storage.command("check")
@with_appcontext
def check_command() -> None:
    """Check that the store and the spool can be reached, read and written."""
    failed = False
    store = services.store()
    click.echo(f"store: {describe(store)}")
    try:
        store.check()
        click.echo("  list, write, read, delete: ok")
    except StorageError as exc:
        click.echo(f"  FAILED: {exc}")
        failed = True
    spool = services.spool()
    click.echo(f"spool: folder {spool.directory}")
    try:
        spool.check()
        report = spool.report()
        click.echo(f"  write: ok ({report.files} files waiting, {_size(report.bytes)})")
    except StorageError as exc:
        click.echo(f"  FAILED: {exc}")
        failed = True
    sys.exit(1 if failed else 0)


@storage.command("migrate")
@click.option("--to", "target_url", required=True, help="Storage URL to copy every blob to.")
@with_appcontext
def migrate_command(target_url: str) -> None:
    """Copy every catalogued blob to another store, verifying each; safe to run again."""
    from server import db

    target = services.open_store(target_url)
    click.echo(f"from {describe(services.store())} (and the spool) to {describe(target)}")
    done = 0

    def progress(_blob, _state: str) -> None:
        nonlocal done
        done += 1
        if done % 100 == 0:
            click.echo(f"  {done} blobs...")

    with db.database().session(readonly=True) as db_session:
        try:
            report = operations.migrate(db_session, target, progress=progress)
        except StorageError as exc:
            click.echo(f"cannot use {describe(target)}: {exc}")
            sys.exit(1)
    for sha256, reason in report.failed:
        click.echo(f"FAILED {sha256}: {reason}")
    click.echo(
        f"{report.copied} copied, {report.present} already there, {len(report.failed)} failed"
    )
    if report.stopped:
        click.echo(f"stopped: {report.stopped}; run the same command again to continue")
    if report.failed or report.stopped:
        sys.exit(1)
    click.echo(f"done: set MERIT_STORAGE_URL={target_url} and restart the server")


@storage.command("verify")
@click.option("--quick", is_flag=True, help="Compare sizes only; do not read the bytes.")
@with_appcontext
def verify_command(quick: bool) -> None:
    """Check every catalogued blob is stored with the right size and SHA-256."""
    from server import db

    def progress(_blob, problem) -> None:
        if problem:
            click.echo(str(problem))

    with db.database().session(readonly=True) as db_session:
        report = operations.verify(db_session, quick=quick, progress=progress)
    click.echo(f"{report.checked} blobs checked, {len(report.problems)} problems")
    sys.exit(1 if report.problems else 0)


@storage.command("spool")
@with_appcontext
def spool_command() -> None:
    """Report what waits in the spool for the store to come back."""
    spool = services.spool()
    report = spool.report()
    share = report.bytes / report.max_bytes if report.max_bytes else 1
    click.echo(f"spool: {spool.directory}")
    click.echo(f"  files:  {report.files}")
    click.echo(f"  bytes:  {_size(report.bytes)} of {_size(report.max_bytes)} ({share:.0%})")
    if report.oldest:
        age = dt.datetime.now(dt.UTC) - report.oldest
        click.echo(f"  oldest: {report.oldest:%Y-%m-%d %H:%M:%S} UTC ({_age(age)} ago)")
    else:
        click.echo("  oldest: (empty)")
    if report.corrupt:
        click.echo(f"  set aside as damaged: {report.corrupt} (in {spool.corrupt_dir})")


@storage.command("drain")
@with_appcontext
def drain_command() -> None:
    """Move every blob waiting in the spool to the store now."""
    report = services.drain()
    remaining = services.spool().report()
    click.echo(f"moved {report.moved} blobs ({_size(report.bytes)})")
    for sha256 in report.corrupt:
        click.echo(f"damaged, set aside: {sha256}")
    if report.error:
        click.echo(f"store: {report.error}")
    click.echo(f"{remaining.files} blobs still waiting")
    sys.exit(1 if remaining.files or report.corrupt else 0)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} bytes"


def _age(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
