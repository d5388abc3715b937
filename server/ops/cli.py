"""``merit backup``, ``merit restore`` and ``merit doctor``.

    merit backup /srv/backups            a dated archive in that folder (or a file name)
    merit backup                         the same, in MERIT_BACKUP_DIR
    merit restore ARCHIVE [--force]      bring a new machine back from an archive
    merit doctor                         check everything a running server needs; say what to fix

Each exits non-zero when something is wrong, so they fit in cron jobs and deploy scripts.
"""

from __future__ import annotations

import sys
import time

import click
from flask import current_app
from flask.cli import with_appcontext


@click.command("backup")
@click.argument("target", type=click.Path(), required=False)
@click.option(
    "--attachments",
    type=click.Choice(["auto", "archive", "bucket"]),
    default="auto",
    show_default=True,
    help="Copy attachments into the archive, or leave them in the S3 bucket (auto: the bucket "
    "for S3, the archive for a local folder).",
)
@with_appcontext
def backup(target: str | None, attachments: str) -> None:
    """Write a consistent archive of the database and attachments to TARGET (file or folder).

    Without TARGET, into MERIT_BACKUP_DIR. The archive is readable by this account only.
    """
    from server.ops import backup as backups

    started = time.monotonic()
    try:
        report = backups.backup(
            current_app._get_current_object(),
            target,
            attachments=attachments,
            progress=click.echo,
        )
    except backups.BackupError as exc:
        click.echo(f"backup failed: {exc}", err=True)
        sys.exit(1)
    rows = sum(report.rows.values())
    click.echo(
        f"wrote {report.path}: {rows} rows in {len(report.rows)} tables, "
        f"{report.blobs_in_archive} attachments in the archive ({_mb(report.bytes_in_archive)}), "
        f"{report.blobs_in_bucket} left in the bucket, in {time.monotonic() - started:.1f} s"
    )
    if report.blobs_in_bucket:
        click.echo(
            "  the archive names attachments kept in the bucket: keep bucket versioning on so "
            "that none of them can be lost"
        )
    if report.missing:
        click.echo(f"  {len(report.missing)} attachments are missing from the store:", err=True)
        for sha256 in report.missing[:20]:
            click.echo(f"    {sha256}", err=True)
        click.echo("  see `merit storage verify`", err=True)
        sys.exit(1)


@click.command("restore")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("--force", is_flag=True, help="Replace whatever the database already holds.")
@with_appcontext
def restore(archive: str, force: bool) -> None:
    """Restore the database and attachments of ARCHIVE into this server's database and store.

    Everything is checked and staged first; a restore that fails changes nothing.
    """
    from server.ops import backup as backups
    from server.ops import restore as restores

    started = time.monotonic()
    try:
        report = restores.restore(
            current_app._get_current_object(), archive, force=force, progress=click.echo
        )
    except backups.BackupError as exc:
        click.echo(f"restore failed: {exc}", err=True)
        sys.exit(1)
    click.echo(
        f"restored {sum(report.rows.values())} rows in {len(report.rows)} tables, "
        f"{report.blobs_restored} attachments ({report.blobs_present} were already in the store) "
        f"in {time.monotonic() - started:.1f} s"
    )
    click.echo(f"  {report.secret_key}")
    if report.missing:
        click.echo(
            f"  {len(report.missing)} attachments named by the archive are in neither the "
            "archive nor the store (a bucket without versioning?):",
            err=True,
        )
        for sha256 in report.missing[:20]:
            click.echo(f"    {sha256}", err=True)
        sys.exit(1)
    click.echo("  next: `merit storage verify` reads every attachment back and checks it")


@click.command("doctor")
def doctor() -> None:
    """Check configuration, database, storage, Java, clock, disk and file modes; say what to fix."""
    from server.ops import doctor as checks

    findings = checks.examine()
    failed = sum(1 for f in findings if f.status == checks.FAIL)
    warned = sum(1 for f in findings if f.status == checks.WARN)
    for finding in findings:
        label = {checks.OK: "ok  ", checks.WARN: "WARN", checks.FAIL: "FAIL"}[finding.status]
        click.echo(f"{label}  {finding.name:<18} {finding.detail}")
        if finding.fix and finding.status != checks.OK:
            click.echo(f"      {'':<18} fix: {finding.fix}")
    click.echo(f"{len(findings)} checks: {failed} failed, {warned} warnings")
    sys.exit(1 if failed else 0)


def _mb(count: int) -> str:
    return f"{count / 1_000_000:.1f} MB"
