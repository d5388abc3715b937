"""What an export can be asked for: one options object, read from a URL's query or the CLI.

The names of the query parameters are ODK Central's where Central has the option
(``attachments``, ``groupPaths``, ``splitSelectMultiples``, ``deletedFields``, ``$filter``) and
ours otherwise. Every bad value raises a 400 problem naming the parameter, never a 500.

Defaults that differ from Central, on purpose:

* ``deletedFields`` is true: a field removed in a later version keeps its column, so records
  filled before the change keep their answers and no column moves (Central's default drops it);
* rejected records are left out unless ``includeRejected=true`` or ``reviewState`` names them;
* ``cleaned`` is true: accepted corrections of the cleaning log are applied;
* ``choiceLabels`` (Central has no such option; KoboToolbox has it): answers of select
  questions as their choice labels in that language of the form (``fr``, ``French (fr)``,
  ``default`` for a form in one language) instead of choice names; the several choices of a
  select-multiple answer are joined by ``; ``. Left out, the files are Central's, byte for
  byte;
* ``escapeFormulas`` is true (Central has no such option): a CSV cell that Excel, LibreOffice
  or Google Sheets would run as a formula, because it starts with ``=``, ``+``, ``-``, ``@``,
  a tab or a carriage return, gets a leading ``'`` and is shown as text (OWASP, "CSV
  Injection"). Numbers of integer and decimal fields (``-5``), coordinates and dates are left
  alone. ``escapeFormulas=false`` gives every cell as the tablet wrote it, for R, Stata or
  pandas, which never run cells; open such a file in a spreadsheet only if you trust every
  tablet and account. Workbooks (xlsx) hold text as string cells, never formulas, either way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from flask_babel import gettext

from server import bounds, errors
from server.submissions.models import REVIEW_STATES

Format = Literal["csv.zip", "csv", "xlsx", "geojson", "media.zip"]
FORMATS: tuple[str, ...] = ("csv.zip", "csv", "xlsx", "geojson", "media.zip")
PiiMode = Literal["plain", "pseudonymise", "omit"]
PII_MODES: tuple[str, ...] = ("plain", "pseudonymise", "omit")
# "received" names records nobody has reviewed yet (Central's null review state).
RECEIVED = "received"


@dataclass(frozen=True)
class ExportOptions:
    """Every choice an export offers; the defaults give Central's layout, cleaned."""

    # Headers: field names, or labels in ``language`` (a language of the form, or its default).
    headers: Literal["names", "labels"] = "names"
    language: str | None = None
    group_paths: bool = True
    separator: str = "-"
    split_select_multiples: bool = False
    split_geopoints: bool = True
    # Answers of selects: choice names (None), or their labels in this language of the form.
    choice_labels: str | None = None
    # Filters on the records.
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    review_states: tuple[str, ...] | None = None
    submitter_ids: tuple[int, ...] | None = None
    form_versions: tuple[str, ...] | None = None
    odata_filter: str | None = None
    include_rejected: bool = False
    # Which columns.
    fields: tuple[str, ...] | None = None
    deleted_fields: bool = True
    # Output.
    bom: bool = False
    attachments: bool = True
    client_audit: bool = True
    cleaned: bool = True
    pii: PiiMode = "pseudonymise"
    # A ' before CSV cells a spreadsheet would run as formulas (see the module's docstring).
    escape_formulas: bool = True

    def describe(self) -> dict[str, Any]:
        """Return the options as JSON-ready values, for the audit log."""
        out: dict[str, Any] = {}
        defaults = ExportOptions()
        for key, value in asdict(self).items():
            if value == getattr(defaults, key) and key != "pii":
                continue
            if isinstance(value, dt.datetime):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise errors.BadExportOption(field=name, reason=gettext("expected true or false"))


def parse_datetime(name: str, raw: str, *, end: bool = False) -> dt.datetime:
    """Read an ISO 8601 date or date-time; a bare date as an ``end`` means the whole day."""
    try:
        return bounds.moment(raw, end=end)
    except bounds.OutOfBounds as exc:
        raise errors.BadExportOption(field=name, reason=exc.reason) from None


def _list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def parse_options(params: Mapping[str, str], *, base: ExportOptions | None = None) -> ExportOptions:
    """Build options from query parameters (or CLI values given under the same names).

    Unknown parameters are ignored, as Central does; known ones with bad values raise 400.
    """
    values: dict[str, Any] = {}
    get = params.get

    def flag(name: str, attribute: str) -> None:
        raw = get(name)
        if raw is not None and raw != "":
            values[attribute] = _bool(name, raw)

    headers = get("headers")
    if headers:
        if headers not in ("names", "labels"):
            raise errors.BadExportOption(
                field="headers", reason=gettext("expected names or labels")
            )
        values["headers"] = headers
    if get("language"):
        values["language"] = get("language").strip()
    if get("choiceLabels") and get("choiceLabels").strip().lower() not in ("false", "no", "0"):
        values["choice_labels"] = get("choiceLabels").strip()
    flag("groupPaths", "group_paths")
    separator = get("separator")
    if separator is not None and separator != "":
        if len(separator) > 3 or any(ch in separator for ch in "\r\n\"'"):
            raise errors.BadExportOption(
                field="separator",
                reason=gettext("expected one to three characters, without quotes or line breaks"),
            )
        values["separator"] = separator
    flag("splitSelectMultiples", "split_select_multiples")
    flag("splitGeopoints", "split_geopoints")
    if get("start"):
        values["start"] = parse_datetime("start", get("start"))
    if get("end"):
        values["end"] = parse_datetime("end", get("end"), end=True)
    if "start" in values and "end" in values and values["end"] <= values["start"]:
        raise errors.BadExportOption(
            field="end", reason=gettext("the end must come after the start")
        )
    if get("reviewState"):
        given = _list(get("reviewState"))
        states = tuple(RECEIVED if s in ("null", RECEIVED) else s for s in given)
        unknown = [s for s in states if s != RECEIVED and s not in REVIEW_STATES]
        if unknown:
            raise errors.BadExportOption(
                field="reviewState",
                reason=gettext("unknown review state %(state)s; expected %(allowed)s")
                % {"state": unknown[0], "allowed": ", ".join((RECEIVED, *REVIEW_STATES))},
            )
        values["review_states"] = states
    if get("submitterId"):
        try:
            values["submitter_ids"] = tuple(
                bounds.whole_number(s) for s in _list(get("submitterId"))
            )
        except bounds.OutOfBounds:
            raise errors.BadExportOption(
                field="submitterId", reason=gettext("expected actor ids separated by commas")
            ) from None
    if get("formVersion"):
        values["form_versions"] = _list(get("formVersion"))
    if get("$filter"):
        values["odata_filter"] = get("$filter")
    flag("includeRejected", "include_rejected")
    if get("fields"):
        values["fields"] = _list(get("fields"))
    flag("deletedFields", "deleted_fields")
    flag("bom", "bom")
    flag("attachments", "attachments")
    flag("clientAudit", "client_audit")
    flag("cleaned", "cleaned")
    flag("escapeFormulas", "escape_formulas")
    pii = get("pii")
    if pii:
        pii = {"pseudonymize": "pseudonymise"}.get(pii, pii)
        if pii not in PII_MODES:
            raise errors.BadExportOption(
                field="pii", reason=gettext("expected plain, pseudonymise or omit")
            )
        values["pii"] = pii
    return replace(base or ExportOptions(), **values)
