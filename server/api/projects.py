"""Projects, as ODK Central serves them.

GET, POST             /v1/projects
GET, PATCH, DELETE    /v1/projects/<p>
"""

from __future__ import annotations

from flask import jsonify, request
from flask_babel import gettext as _

from server import db, errors
from server.api.blueprint import bp
from server.api.render import iso, json_body, success
from server.auth import access
from server.projects import services
from server.projects.models import Project


def project_json(project: Project, counts: services.ProjectCounts | None = None) -> dict:
    """Render a project as Central does (with counts when extended metadata is asked for)."""
    body = {
        "id": project.id,
        "name": project.name,
        "description": project.description,
        "archived": project.archived,
        "keyId": project.key_id,
        "createdAt": iso(project.created_at),
        "updatedAt": iso(project.updated_at),
        "deletedAt": iso(project.deleted_at),
    }
    if counts is not None:
        body.update(
            {
                "forms": counts.forms,
                "appUsers": counts.app_users,
                "lastSubmission": iso(counts.last_submission),
                "datasets": 0,
            }
        )
    return body


def _extended() -> bool:
    return request.headers.get("X-Extended-Metadata", "").lower() == "true"


@bp.get("/projects")
def list_projects():
    """List the projects the actor holds a role in (all of them for administrators)."""
    access.require_actor()
    projects = services.visible(db.session(), access.visible_project_ids())
    counts = services.counts(db.session(), [p.id for p in projects]) if _extended() else {}
    return jsonify([project_json(p, counts.get(p.id)) for p in projects])


@bp.post("/projects")
def create_project():
    """Create a project (administrators)."""
    actor = access.require("project.create")
    body = json_body()
    name = body.get("name")
    if not isinstance(name, str):
        raise errors.MissingParameter(field="name")
    project = services.create(db.session(), name, body.get("description"), by=actor.id)
    return jsonify(project_json(project))


@bp.get("/projects/<int:project_id>")
def get_project(project_id: int):
    """Return one project."""
    project = services.get(db.session(), project_id)
    access.require("project.read", project_id=project_id)
    counts = services.counts(db.session(), [project_id]).get(project_id) if _extended() else None
    return jsonify(project_json(project, counts))


@bp.patch("/projects/<int:project_id>")
def update_project(project_id: int):
    """Rename, describe or archive a project."""
    project = services.get(db.session(), project_id)
    actor = access.require("project.update", project_id=project_id)
    body = json_body()
    archived = body.get("archived")
    if archived is not None and not isinstance(archived, bool):
        raise errors.UnexpectedValue(field="archived", reason=_("expected true or false"))
    project = services.update(
        db.session(),
        project,
        name=body.get("name"),
        description=body.get("description"),
        archived=archived,
        by=actor.id,
    )
    return jsonify(project_json(project))


@bp.delete("/projects/<int:project_id>")
def delete_project(project_id: int):
    """Delete a project (administrators)."""
    project = services.get(db.session(), project_id)
    actor = access.require("project.delete", project_id=project_id)
    services.delete(db.session(), project, by=actor.id)

    return jsonify(success())
