"""``merit export``: the same exports as the API, from the command line, streamed to a file.

    merit export 1 household --format csv.zip -o household.zip
    merit export 1 household --format xlsx --headers labels --language fr -o menages.xlsx
    merit export 1 household --format csv --start 2024-05-01 --review-state approved -o - | head

Options are the API's query parameters (:mod:`server.exports.options`); personal data is
pseudonymised unless ``--pii plain``, and CSV text that a spreadsheet would run as a formula
starts with ``'`` unless ``--no-escape-formulas``. Each export is written to the audit log.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
from flask.cli import with_appcontext

from server import db, errors
from server.exports import services
from server.exports.options import FORMATS, PII_MODES, parse_options
from server.forms.services import find_form


@click.command("export")
@click.argument("project_id", type=int)
@click.argument("xml_form_id")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv.zip", show_default=True)
@click.option("-o", "--output", required=True, help="File to write, or - for standard output.")
@click.option("--headers", type=click.Choice(["names", "labels"]), help="Field names or labels.")
@click.option("--language", help="Language of labels (fr, en, or the form's language name).")
@click.option(
    "--choice-labels",
    metavar="LANGUAGE",
    help="Answers of selects as choice labels in this language (fr, en, default) not names.",
)
@click.option("--group-paths/--no-group-paths", default=None, help="Prefix groups (grp-q).")
@click.option("--separator", help="Separator of group paths (default -).")
@click.option("--split-select-multiples", is_flag=True, default=None, help="0/1 per choice.")
@click.option("--split-geopoints/--no-split-geopoints", default=None, help="Latitude...")
@click.option("--start", help="Records received from (ISO date or date-time).")
@click.option("--end", help="Records received before (a bare date includes that day).")
@click.option("--review-state", help="Comma-separated: received, approved, hasIssues...")
@click.option("--submitter", help="Comma-separated actor ids.")
@click.option("--form-version", help="Comma-separated form versions.")
@click.option("--filter", "odata_filter", help="OData $filter, as ODK Central accepts it.")
@click.option("--fields", help="Comma-separated fields (names, paths, groups).")
@click.option("--bom", is_flag=True, default=None, help="Start CSV files with a UTF-8 BOM.")
@click.option("--deleted-fields/--no-deleted-fields", default=None, help="Removed fields too.")
@click.option("--include-rejected", is_flag=True, default=None, help="Rejected records too.")
@click.option("--raw", is_flag=True, help="Do not apply the cleaning log's corrections.")
@click.option("--pii", type=click.Choice(PII_MODES), default="pseudonymise", show_default=True)
@click.option("--attachments/--no-attachments", default=None, help="Media in csv.zip.")
@click.option("--client-audit/--no-client-audit", default=None, help="Merged audit logs.")
@click.option(
    "--escape-formulas/--no-escape-formulas",
    default=None,
    help="A ' before CSV text that Excel would run as a formula (default); "
    "--no-escape-formulas for R, Stata or pandas.",
)
@click.option(
    "--passphrase",
    multiple=True,
    help="KEYID=PASSPHRASE of a managed key, to decrypt encrypted records (repeatable).",
)
@click.option(
    "--private-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM private key of a self-managed encrypted form.",
)
@with_appcontext
def export(project_id: int, xml_form_id: str, fmt: str, output: str, **given: object) -> None:
    """Export a form's records (FORMAT: csv.zip, csv, xlsx, geojson, media.zip)."""
    names = {
        "headers": "headers",
        "language": "language",
        "choice_labels": "choiceLabels",
        "group_paths": "groupPaths",
        "separator": "separator",
        "split_select_multiples": "splitSelectMultiples",
        "split_geopoints": "splitGeopoints",
        "start": "start",
        "end": "end",
        "review_state": "reviewState",
        "submitter": "submitterId",
        "form_version": "formVersion",
        "odata_filter": "$filter",
        "fields": "fields",
        "bom": "bom",
        "deleted_fields": "deletedFields",
        "include_rejected": "includeRejected",
        "pii": "pii",
        "attachments": "attachments",
        "client_audit": "clientAudit",
        "escape_formulas": "escapeFormulas",
    }
    params = {
        query: str(given[option]).lower() if isinstance(given[option], bool) else str(given[option])
        for option, query in names.items()
        if given.get(option) is not None
    }
    if given.get("raw"):
        params["cleaned"] = "false"
    # The operator may see everything; --pii chooses what the file holds (pseudonyms unless
    # --pii plain).
    exporter = services.Exporter(actor_id=None, via="cli", may_see_personal=True, may_decrypt=True)
    try:
        options = parse_options(params)
        form = find_form(db.session(), project_id, xml_form_id)
        if form is None:
            raise click.ClickException(f"no form {xml_form_id} in project {project_id}")
        prepared = services.export(form, fmt, options, exporter, keys=_keys(given))
        started = time.monotonic()
        target = sys.stdout.buffer if output == "-" else open(output, "wb")  # noqa: SIM115
        try:
            for chunk in prepared.chunks:
                target.write(chunk)
        finally:
            prepared.close()
            if target is not sys.stdout.buffer:
                target.close()
    except errors.Problem as problem:
        raise click.ClickException(problem.render_message()) from None
    elapsed = time.monotonic() - started
    click.echo(
        f"{prepared.stats.records_read} records, {prepared.stats.bytes_out} bytes "
        f"in {elapsed:.1f} s -> {output}",
        err=True,
    )


def _keys(given: dict[str, Any]) -> services.Keys:
    """Read the keys given on the command line to decrypt the records, if any."""
    passphrases = {}
    for item in given.get("passphrase") or ():
        key_id, _, passphrase = str(item).partition("=")
        if not key_id.isdigit() or not passphrase:
            raise click.BadParameter("expected KEYID=PASSPHRASE", param_hint="--passphrase")
        passphrases[int(key_id)] = passphrase
    private_key = given.get("private_key")
    return services.Keys(
        passphrases=passphrases,
        private_key_pem=private_key.read_bytes() if isinstance(private_key, Path) else None,
    )
