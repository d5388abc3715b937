"""Conflicts of a form's records: payloads sent again under a known instanceID, settled here.

ODK Central keeps no such thing (it answers 409 and forgets the payload); this server keeps it
for a coordinator (:mod:`server.submissions.conflicts`), and names the routes as Central would:

GET     /projects/<p>/forms/<f>/conflicts              list, newest first (``?resolved=``)
GET     /projects/<p>/forms/<f>/conflicts/<id>         one, with the answers that differ
GET     /projects/<p>/forms/<f>/conflicts/<id>.xml     the payload's XML, as received
PATCH   /projects/<p>/forms/<f>/conflicts/<id>         settle it: ``{"resolution":
                                                       "keepFirst" | "takeSecond" | "discard"}``

Only those who may change the form's records (``submission.update``: coordinators and
administrators) see or settle conflicts; answers go through the reader's disclosure.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from server import db, personal
from server.api.blueprint import bp
from server.api.render import json_body, query_bool, query_int
from server.api.schemas import ConflictDetailOut, ConflictIn, ConflictOut, documented, load
from server.api.submissions import dropped_json
from server.auth import access
from server.forms import services as forms
from server.forms.models import Form
from server.submissions import conflicts
from server.submissions.conflicts import ConflictRow

FORM = "/projects/<int:project_id>/forms/<xml_form_id>"
VERB = "submission.update"


def _form(project_id: int, xml_form_id: str) -> tuple[Form, int]:
    form = forms.get_form(db.session(), project_id, xml_form_id)
    return form, access.require_on_form(VERB, form).id


def _json(row: ConflictRow) -> dict[str, Any]:
    conflict = row.conflict
    db_session = db.session()
    version = conflicts.made_version(db_session, conflict)
    return {
        "id": conflict.id,
        "instanceId": conflict.instance_id,
        "reason": conflict.reason,
        "formVersion": conflicts.form_version_name(db_session, conflict),
        "submitterId": conflict.submitter_id,
        "deviceId": conflict.device_id,
        "userAgent": conflict.user_agent,
        "createdAt": conflict.received_at,
        "resolvedAt": conflict.resolved_at,
        "resolution": conflict.resolution,
        "resolvedBy": conflict.resolved_by,
        "versionInstanceId": version,
        "attachments": [kept.name for kept, _blob in conflicts.files(db_session, conflict)],
        "droppedAttachments": dropped_json(conflict.attachments_dropped, conflict.dropped_names),
    }


@bp.get(FORM + "/conflicts")
@documented(response=ConflictOut, many=True, query={"resolved": "boolean", "limit": "integer"})
def list_conflicts(project_id: int, xml_form_id: str) -> Response:
    """List a form's conflicts, newest first (``resolved=false``: those still to settle)."""
    form, _ = _form(project_id, xml_form_id)
    settled = query_bool("resolved") if request.args.get("resolved") else None
    rows = conflicts.list_conflicts(
        db.session(), form.id, settled=settled, limit=query_int("limit", None, minimum=1)
    )
    return jsonify([ConflictOut().dump(_json(row)) for row in rows])


@bp.get(FORM + "/conflicts/<int:conflict_id>")
@documented(response=ConflictDetailOut)
def get_conflict(project_id: int, xml_form_id: str, conflict_id: int) -> Response:
    """Return one conflict with the answers that differ from the record's current version."""
    form, _ = _form(project_id, xml_form_id)
    db_session = db.session()
    row = conflicts.get(db_session, form.id, conflict_id)
    found = conflicts.contents(db_session, form, row.conflict)
    disclosure = personal.for_form(db_session, form)
    current = disclosure.document(
        found.current.raw_document, instance_id=found.record.instance_id, channel="api.conflict"
    )
    sent = disclosure.document(
        found.document, instance_id=row.conflict.instance_id, channel="api.conflict"
    )
    body = _json(row)
    body["encrypted"] = found.encrypted
    body["differences"] = [
        {"path": path, "current": first, "conflicting": second}
        for path, first, second in conflicts.differences(current, sent, found.root)
    ]
    return jsonify(ConflictDetailOut().dump(body))


@bp.get(FORM + "/conflicts/<int:conflict_id>.xml")
@documented(content="application/xml")
def conflict_xml(project_id: int, xml_form_id: str, conflict_id: int) -> Response:
    """Serve the conflicting payload's XML as received (empty once discarded)."""
    form, _ = _form(project_id, xml_form_id)
    db_session = db.session()
    conflict = conflicts.get(db_session, form.id, conflict_id).conflict
    shown = personal.for_form(db_session, form).xml(
        conflict.raw_xml, instance_id=conflict.instance_id, channel="api.conflict.xml"
    )
    return Response(shown.encode("utf-8"), content_type="application/xml")


@bp.patch(FORM + "/conflicts/<int:conflict_id>")
@documented(body=ConflictIn, response=ConflictOut)
def resolve_conflict(project_id: int, xml_form_id: str, conflict_id: int) -> Response:
    """Settle a conflict: keepFirst, takeSecond (the payload becomes an edit) or discard."""
    form, actor_id = _form(project_id, xml_form_id)
    resolution = load(ConflictIn(), json_body())["resolution"]
    conflicts.resolve(db.session(), form, conflict_id, resolution, actor_id=actor_id)
    return jsonify(ConflictOut().dump(_json(conflicts.get(db.session(), form.id, conflict_id))))
