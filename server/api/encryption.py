"""Managed encryption of a project, and the keys a form's records are encrypted with.

POST    /v1/projects/<p>/key                              turn managed encryption on
GET     /v1/projects/<p>/forms/<f>/submissions/keys       keys used by the form's records

``POST .../key`` takes ``{"passphrase": "...", "hint": "..."}`` as ODK Central does and answers
the project (with its ``keyId``). The passphrase is never stored, logged or echoed: only the
private key sealed under it is kept (:mod:`server.crypto.keys`).
"""

from __future__ import annotations

from typing import Any

from flask import jsonify

from server import db
from server.api.blueprint import bp
from server.api.projects import project_json
from server.api.render import iso, json_body
from server.auth import access
from server.crypto import create_managed_key, record_keys
from server.forms.services import get_form
from server.projects import services as projects
from server.projects.models import ProjectKey


def key_json(key: ProjectKey) -> dict[str, Any]:
    """Render a key as Central does: never anything of its private half."""
    return {
        "id": key.id,
        "public": key.public,
        "managed": bool(key.managed),
        "hint": key.hint,
        "createdAt": iso(key.created_at),
    }


@bp.post("/projects/<int:project_id>/key")
def enable_managed_encryption(project_id: int):
    """Turn on managed encryption: a key pair whose private half only the passphrase opens."""
    project = projects.get(db.session(), project_id)
    actor = access.require("project.key", project_id=project_id)
    body = json_body()
    db_session = db.session()
    create_managed_key(
        db_session, project, body.get("passphrase"), body.get("hint"), actor_id=actor.id
    )
    return jsonify(project_json(projects.get(db.session(), project_id)))


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/submissions/keys")
def submission_keys(project_id: int, xml_form_id: str):
    """List the keys the form's (published) records are encrypted with."""
    db_session = db.session()
    projects.get(db_session, project_id)
    form = get_form(db_session, project_id, xml_form_id)
    access.require("submission.decrypt", project_id=project_id, form_id=form.id)
    return jsonify([key_json(key) for key in record_keys(db_session, form)])
