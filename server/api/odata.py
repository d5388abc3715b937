"""OData feeds of a form's records, as ODK Central serves them (pyodk, Power BI, Excel).

GET  /v1/projects/<p>/forms/<f>.svc                       service document
GET  /v1/projects/<p>/forms/<f>.svc/$metadata             EDMX
GET  /v1/projects/<p>/forms/<f>.svc/Submissions           one row per record
GET  /v1/projects/<p>/forms/<f>.svc/Submissions.<g>.<r>   one row per repeat instance
GET  /v1/projects/<p>/forms/<f>.svc/Submissions('<id>')[/<repeat>...]
(and the same under ``.../forms/<f>/draft.svc`` for the draft's test records)

Query options: ``$top`` (the page size), ``$skip``, ``$count``, ``$filter`` (on
``__system/submissionDate``, ``updatedAt``, ``submitterId``, ``reviewState`` and ``__id``, also
as ``$root/Submissions/__system/...`` from a repeat table), ``$orderby`` (those fields, ``asc``
or ``desc``), ``$select``, ``$expand=*``, ``$wkt=true``. Booleans are read case-insensitively.

Paging: a page holds ``$top`` rows, or 1000 when the client gives none (never the whole form
in one answer), at most 5000. When more rows follow, ``@odata.nextLink`` repeats the request
with a ``$skiptoken`` naming the last row sent (:mod:`server.submissions.paging`): the next
page starts right after it, so records arriving meanwhile never shift a page (offsets would
skip or repeat rows). Records come newest first, as in Central, unless ``$orderby`` says
otherwise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Response, request
from flask_babel import gettext

from server import db, errors, personal
from server.api.blueprint import bp
from server.api.render import iso, query_bool, query_int
from server.api.schemas import documented
from server.auth import access
from server.forms import services as forms
from server.forms.models import Form
from server.odata import format as fmt
from server.odata import services
from server.openrosa.protocol import base_url, quoted
from server.personal import Disclosure
from server.submissions import paging
from server.submissions.services import SubmissionFilter, SubmissionRow

FORM = "/projects/<int:project_id>/forms/<xml_form_id>"
DEFAULT_PAGE = 1000
MAX_PAGE = 5000
JSON_TYPE = "application/json; odata.metadata=minimal"
ORDERABLE = {
    "__system/submissionDate": "submissionDate",
    "__system/updatedAt": "updatedAt",
    "__system/reviewState": "reviewState",
    "__system/submitterId": "submitterId",
    "__id": "instanceId",
}
_SINGLE = re.compile(r"^([^(]+)\('((?:[^']|'')*)'\)$")


def route(rule: str) -> Any:
    """Register a view for a form's OData service and for its draft's (``draft.svc``)."""

    def register(view: Any) -> Any:
        bp.add_url_rule(FORM + ".svc" + rule, view.__name__, view, methods=["GET"])
        bp.add_url_rule(
            FORM + "/draft.svc" + rule,
            "draft_" + view.__name__,
            view,
            methods=["GET"],
            defaults={"draft": True},
        )
        return view

    return register


def _json(body: dict[str, Any]) -> Response:
    response = Response(json.dumps(body, ensure_ascii=False), content_type=JSON_TYPE)
    response.headers["OData-Version"] = "4.0"
    return response


def _service_url(project_id: int, xml_form_id: str, draft: bool) -> str:
    suffix = "/draft.svc" if draft else ".svc"
    return f"{base_url()}/v1/projects/{project_id}/forms/{quoted(xml_form_id)}{suffix}"


def _form(project_id: int, xml_form_id: str, draft: bool) -> Form:
    form = forms.find_form(db.session(), project_id, xml_form_id)
    if form is None or (draft and form.draft_version_id is None):
        raise errors.NotFound()
    access.require_on_form("submission.read", form)
    return form


@route("")
@documented(content="application/json")
def odata_service(project_id: int, xml_form_id: str, draft: bool = False) -> Response:
    """Return the OData service document: Submissions and one entity set per repeat."""
    form = _form(project_id, xml_form_id, draft)
    roots = services.tree(db.session(), form, draft=draft)
    return _json(fmt.service_document(roots, _service_url(project_id, xml_form_id, draft)))


@route("/$metadata")
@documented(content="application/xml")
def odata_metadata(project_id: int, xml_form_id: str, draft: bool = False) -> Response:
    """Return the EDMX document describing every entity set of the form."""
    form = _form(project_id, xml_form_id, draft)
    roots = services.tree(db.session(), form, draft=draft)
    response = Response(fmt.edmx(xml_form_id, roots), content_type="application/xml")
    response.headers["OData-Version"] = "4.0"
    return response


# ---- query options -----------------------------------------------------------------------------


def _options(table: fmt.Table, roots: list[fmt.Node]) -> fmt.RowOptions:
    expand = request.args.get("$expand")
    if expand is not None and expand.strip() not in ("", "*"):
        raise errors.ExpandNotSupported(text=expand)
    expanding = bool(expand and expand.strip() == "*")
    select = request.args.get("$select")
    if expanding and select and select.strip() not in ("", "*"):
        raise errors.SelectWithExpand()
    return fmt.RowOptions(
        wkt=query_bool("$wkt", False),
        expand=expanding,
        selection=fmt.parse_select(select, table, roots),
    )


def _order() -> paging.Order:
    text = (request.args.get("$orderby") or "").strip()
    if not text:
        return paging.NEWEST_FIRST
    clauses = [c.strip() for c in text.split(",") if c.strip()]
    if len(clauses) != 1:
        raise errors.NotImplementedFeature(feature="$orderby on more than one property")
    words = clauses[0].split()
    words[1:] = [w.lower() for w in words[1:]]
    if words[0] not in ORDERABLE or len(words) > 2 or words[1:] not in ([], ["asc"], ["desc"]):
        raise errors.UnexpectedValue(
            field="$orderby",
            reason=gettext("expected one of %(fields)s, then asc or desc")
            % {"fields": ", ".join(ORDERABLE)},
        )
    return paging.Order(ORDERABLE[words[0]], descending=words[1:] == ["desc"])


def _page_size() -> int:
    return min(query_int("$top", DEFAULT_PAGE) or 0, MAX_PAGE)


def _skip_and_token() -> tuple[int, str | None]:
    token = request.args.get("$skiptoken")
    skip = query_int("$skip", 0) or 0
    if token is not None and skip:
        raise errors.UnexpectedValue(
            field="$skip", reason=gettext("$skip cannot be used with $skiptoken")
        )
    return skip, token


def _next_link(token: str | None = None, skip: int | None = None) -> str:
    params = {k: v for k, v in request.args.items() if k not in ("$skiptoken", "$skip")}
    if token is not None:
        params["$skiptoken"] = token
    if skip is not None:
        params["$skip"] = str(skip)
    return f"{base_url()}{request.path}?{urlencode(params)}"


def _document(
    values: list[dict[str, Any]],
    service_url: str,
    table_name: str,
    *,
    next_link: str | None,
    count: int | None,
) -> Response:
    body: dict[str, Any] = {
        "@odata.context": f"{service_url}/$metadata#{table_name}",
        "value": values,
    }
    if next_link is not None:
        body["@odata.nextLink"] = next_link
    if count is not None:
        body["@odata.count"] = count
    return _json(body)


def _record(row: SubmissionRow, disclosure: Disclosure) -> fmt.Record:
    submission, version = row.submission, row.version
    document = None
    if not version.encrypted:
        document = disclosure.document(
            version.raw_document, instance_id=submission.instance_id, channel="odata"
        )
    return fmt.Record(
        instance_id=submission.instance_id,
        document=document,
        system={
            "submissionDate": iso(submission.created_at),
            "updatedAt": iso(submission.updated_at),
            "submitterId": str(submission.submitter_id) if submission.submitter_id else None,
            "submitterName": row.submitter_name,
            "attachmentsPresent": version.attachments_present,
            "attachmentsExpected": version.attachments_expected,
            "status": "notDecrypted" if version.encrypted else None,
            "reviewState": submission.review_state,
            "deviceId": submission.device_id,
            "edits": row.edits,
            "formVersion": row.form_version,
            "deletedAt": iso(submission.deleted_at),
        },
    )


# ---- repeat-table skiptokens -----------------------------------------------------------------


def _row_token(seq: int, index: int) -> str:
    return paging.wrap({"o": "rows", "s": seq, "i": index})


def _read_row_token(text: str) -> tuple[int, int]:
    payload = paging.unwrap(text, "rows", "s", "i")
    return payload["s"], payload["i"]


# ---- data --------------------------------------------------------------------------------------


@route("/<path:subpath>")
@documented(
    content="application/json",
    query={
        "$top": "integer",
        "$skip": "integer",
        "$skiptoken": "string",
        "$count": "boolean",
        "$filter": "string",
        "$orderby": "string",
        "$select": "string",
        "$expand": "string",
        "$wkt": "boolean",
    },
)
def odata_table(project_id: int, xml_form_id: str, subpath: str, draft: bool = False):
    """Return a page of a table: Submissions, a repeat's table, or one record's rows."""
    form = _form(project_id, xml_form_id, draft)
    roots = services.tree(db.session(), form, draft=draft)
    service_url = _service_url(project_id, xml_form_id, draft)
    segments = subpath.split("/")
    single = _SINGLE.match(segments[0])
    if single is not None or len(segments) > 1:
        return _single(form, roots, segments, service_url, draft)
    table = fmt.find_table(roots, subpath)
    read = _TableRead(
        form=form,
        table=table,
        roots=roots,
        options=_options(table, roots),
        filters=SubmissionFilter(draft=draft),
        conditions=services.conditions(db.session(), request.args.get("$filter")),
        disclosure=personal.for_form(db.session(), form),
    )
    if table.is_root:
        return _records_page(read, service_url)
    return _repeat_page(read, service_url)


@dataclass(frozen=True)
class _TableRead:
    """What a page of one table reads: which records, the table's rows of them, for whom."""

    form: Form
    table: fmt.Table
    roots: list[fmt.Node]
    options: fmt.RowOptions
    filters: SubmissionFilter
    conditions: list[Any]
    disclosure: Disclosure

    def rows(
        self, row: SubmissionRow, disclosure: Disclosure, options: fmt.RowOptions | None = None
    ) -> list[dict[str, Any]]:
        """Return the rows one record gives the table, as ``disclosure`` lets them be seen."""
        record = _record(row, disclosure)
        return fmt.rows(self.table, self.roots, record, options or self.options)


def _records_page(read: _TableRead, service_url: str) -> Response:
    count = (
        paging.count(db.session(), read.form.id, read.filters, conditions=read.conditions)
        if query_bool("$count", False)
        else None
    )
    order = _order()
    skip, token = _skip_and_token()
    cursor = paging.decode(token, order) if token is not None else None
    found = paging.page(
        db.session(),
        read.form.id,
        read.filters,
        order=order,
        cursor=cursor,
        offset=skip,
        limit=_page_size(),
        conditions=read.conditions,
    )
    values = [read.rows(row, read.disclosure)[0] for row in found.rows]
    next_link = None
    if found.more and found.next_cursor is not None:
        next_link = _next_link(token=paging.encode(found.next_cursor, order))
    return _document(values, service_url, read.table.name, next_link=next_link, count=count)


def _repeat_page(read: _TableRead, service_url: str) -> Response:
    if request.args.get("$orderby"):
        raise errors.NotImplementedFeature(feature="$orderby on a repeat table")
    size = _page_size()
    skip, token = _skip_and_token()
    start = _read_row_token(token) if token is not None else None
    cursor = paging.Cursor(start[0] + 1) if start is not None else None
    values: list[dict[str, Any]] = []
    last: tuple[int, int] | None = None
    more = False
    counted = 0
    want_count = query_bool("$count", False)
    db_session = db.session()
    # Rows are read to be counted and skipped too: only those handed out are noted.
    reading = read.disclosure.quiet()
    while True:
        found = paging.page(
            db_session,
            read.form.id,
            read.filters,
            order=paging.NEWEST_FIRST,
            cursor=cursor,
            limit=200,
            conditions=read.conditions,
        )
        for row in found.rows:
            produced = read.rows(row, reading)
            first = 0
            if start is not None and row.submission.seq == start[0]:
                first = start[1] + 1
            counted += len(produced[first:])
            for index in range(first, len(produced)):
                if skip:
                    skip -= 1
                    continue
                if len(values) < size:
                    values.append(produced[index])
                    read.disclosure.note("odata", [row.submission.instance_id])
                    last = (row.submission.seq, index)
                else:
                    more = True
            if more and not want_count:
                break
        if (more and not want_count) or not found.more:
            break
        cursor = found.next_cursor
    count = None
    if want_count:
        # Central counts every row of the table, whatever the page.
        count = counted if start is None else _count_rows(read)
    next_link = _next_link(token=_row_token(*last)) if more and last is not None else None
    return _document(values, service_url, read.table.name, next_link=next_link, count=count)


def _count_rows(read: _TableRead) -> int:
    total = 0
    counting = read.disclosure.quiet()
    for row in paging.iterate(db.session(), read.form.id, read.filters, conditions=read.conditions):
        total += len(read.rows(row, counting, fmt.RowOptions()))
    return total


def _single(
    form: Form,
    roots: list[fmt.Node],
    segments: list[str],
    service_url: str,
    draft: bool,
) -> Response:
    """Rows of one record: ``Submissions('id')`` or ``Submissions('id')/group/repeat``."""
    names: list[str] = []
    ids: list[tuple[int, str]] = []
    for index, segment in enumerate(segments):
        match = _SINGLE.match(segment)
        if match is None:
            names.append(segment)
        else:
            names.append(match.group(1))
            ids.append((index, match.group(2).replace("''", "'")))
    if names[0] != "Submissions" or not ids or ids[0][0] != 0:
        raise errors.NotFound()
    table = fmt.find_table(roots, ".".join(names))
    options = _options(table, roots)
    row = services.record_row(db.session(), form, ids[0][1], draft=draft)
    record = _record(row, personal.for_form(db.session(), form))
    rows = fmt.rows(table, roots, record, options)
    position, wanted = ids[-1]
    if position > 0:
        # Rows below one repeat instance: filter by the key naming that instance.
        key = "__" + "-".join(fmt.sanitize(n) for n in names[: position + 1]) + "-id"
        every = fmt.rows(table, roots, record, fmt.RowOptions(wkt=options.wkt))
        keep = {r["__id"] for r in every if r.get(key) == wanted}
        rows = [r for r in rows if r["__id"] in keep]
    skip = query_int("$skip", 0) or 0
    size = _page_size()
    values = rows[skip : skip + size]
    next_link = _next_link(skip=skip + size) if skip + size < len(rows) else None
    count = len(rows) if query_bool("$count", False) else None
    return _document(values, service_url, table.name, next_link=next_link, count=count)
