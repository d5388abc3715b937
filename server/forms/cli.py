"""``merit forms``: build the programme's XForms from ``xlsforms/`` and publish them.

    merit forms build                    xlsforms/*.xlsx -> forms/*.xml (+ media, build record)
    merit forms publish --project 1      publish forms/ into a project (idempotent)

Both exit non-zero when a form fails, naming the sheet, row and column pyxform gave.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import with_appcontext

from server.forms import compiler, folder


@click.group("forms")
def forms() -> None:
    """Forms: compile the XLSForms of the repository and publish them."""


@forms.command("build")
@click.option(
    "--source", "source_dir", default="xlsforms", show_default=True, type=click.Path(path_type=Path)
)
@click.option(
    "--out", "out_dir", default="forms", show_default=True, type=click.Path(path_type=Path)
)
@click.option(
    "--validate/--no-validate",
    default=True,
    show_default=True,
    help="Run ODK Validate (needs Java; skipped with a note when Java is missing).",
)
def build_command(source_dir: Path, out_dir: Path, validate: bool) -> None:
    """Compile every XLSForm of SOURCE into OUT, with the media each form references."""
    if validate and not compiler.java_available():
        click.echo("Java is not installed: ODK Validate is skipped.", err=True)
    try:
        built = folder.build(source_dir, out_dir, validate=validate)
    except folder.BuildFailed as failed:
        click.echo(f"Build failed; nothing was written to {out_dir}/:\n{failed}", err=True)
        sys.exit(1)
    if not built:
        click.echo(f"No XLSForm in {source_dir}/.")
    for form in built:
        media = f", {len(form.media)} media file(s)" if form.media else ""
        click.echo(
            f"{form.source.name} -> {form.xml_path} (version {form.version or '-'}{media}, "
            f"ODK Validate {form.validation.verdict})"
        )
        for warning in form.warnings:
            click.echo(f"  warning: {warning.message}")


@forms.command("publish")
@click.option("--project", "project_id", default=1, show_default=True, type=int)
@click.option(
    "--dir",
    "forms_dir",
    default=None,
    type=click.Path(path_type=Path),
    help="Folder of built forms (default: MERIT_FORMS_DIR).",
)
@with_appcontext
def publish_command(project_id: int, forms_dir: Path | None) -> None:
    """Publish the built forms into a project: new XML becomes a new version, same XML nothing."""
    from flask import current_app

    from server import db

    built_dir = forms_dir or Path(current_app.config["FORMS_DIR"])
    with db.database().session() as db_session:
        outcomes = folder.publish_outcomes(db_session, built_dir, project_id)
    if not outcomes:
        click.echo(f"No built form in {built_dir}/ (run `merit forms build`).")
    for outcome in outcomes:
        line = f"{outcome.form_id}: {outcome.status}"
        if outcome.version:
            line += f" (version {outcome.version})"
        if outcome.message:
            line += f": {outcome.message}"
        click.echo(line, err=outcome.status == "failed")
    if any(outcome.status == "failed" for outcome in outcomes):
        sys.exit(1)
