"""App users (device accounts), their Collect settings, and role assignments.

GET, POST       /v1/projects/<p>/app-users
DELETE          /v1/projects/<p>/app-users/<id>
GET             /v1/projects/<p>/app-users/<id>/collect-settings      (ours: the QR payload)
GET             /v1/projects/<p>/forms/<f>/assignments[/<roleId>]
POST, DELETE    /v1/projects/<p>/forms/<f>/assignments/<roleId>/<actorId>
GET             /v1/projects/<p>/assignments[/<roleId>]
POST, DELETE    /v1/projects/<p>/assignments/<roleId>/<actorId>

Every change goes through the account, role and app-user services (server/auth/members.py,
which commits, as the console's pages do), which audit it.
"""

from __future__ import annotations

from flask import current_app, jsonify, request
from flask_babel import gettext as _

from server import db, errors
from server.api.blueprint import bp
from server.api.render import iso, json_body, success
from server.auth import access, app_users, members
from server.auth import services as accounts
from server.auth.models import AppUser, Assignment
from server.forms import services as forms
from server.openrosa import settings as collect
from server.openrosa.protocol import base_url
from server.projects import services as projects


def app_user_json(app_user: AppUser) -> dict:
    """Render an app user as Central does (``token`` null once revoked)."""
    actor = app_user.actor
    return {
        "projectId": app_user.project_id,
        "id": actor.id,
        "type": "field_key",
        "displayName": actor.display_name,
        "token": app_users.token_of(app_user, secret_key=current_app.config["SECRET_KEY"]),
        "createdAt": iso(actor.created_at),
        "updatedAt": iso(actor.updated_at),
        "deletedAt": iso(actor.deleted_at),
    }


@bp.get("/projects/<int:project_id>/app-users")
def list_app_users(project_id: int):
    """List a project's app users, active ones first, newest first."""
    projects.get(db.session(), project_id)
    access.require("field_key.list", project_id=project_id)
    return jsonify([app_user_json(a) for a in members.app_users(db.session(), project_id)])


@bp.post("/projects/<int:project_id>/app-users")
def create_app_user(project_id: int):
    """Create an app user (one per tablet); the answer carries its token."""
    projects.get(db.session(), project_id)
    actor = access.require("field_key.create", project_id=project_id)
    name = json_body().get("displayName")
    if not isinstance(name, str) or not name.strip():
        raise errors.MissingParameter(field="displayName")
    app_user = members.create_app_user(
        db.session(),
        project_id,
        name,
        secret_key=current_app.config["SECRET_KEY"],
        actor_id=actor.id,
    )
    return jsonify(app_user_json(app_user))


@bp.delete("/projects/<int:project_id>/app-users/<int:actor_id>")
def delete_app_user(project_id: int, actor_id: int):
    """Delete an app user: its token stops working at once; its records keep its name."""
    actor = access.require("field_key.delete", project_id=project_id)
    app_user = members.get_app_user(db.session(), project_id, actor_id)
    members.delete_app_user(db.session(), app_user, by=actor.id)
    return jsonify(success())


@bp.get("/projects/<int:project_id>/app-users/<int:actor_id>/collect-settings")
def collect_settings(project_id: int, actor_id: int):
    """Return the settings that configure ODK Collect for this app user, and the QR text.

    Query options: form_update_mode, autosend, image_size, periodic_form_updates_check,
    app_language, admin_pw. POST them instead when an admin password is set, to keep it out
    of URLs.
    """
    project = projects.get(db.session(), project_id)
    access.require("field_key.list", project_id=project_id)
    app_user = members.get_app_user(db.session(), project_id, actor_id)
    token = app_users.token_of(app_user, secret_key=current_app.config["SECRET_KEY"])
    if token is None:
        raise errors.NotFound()
    source = request.args
    defaults = collect.CollectOptions()
    options = collect.CollectOptions(
        form_update_mode=source.get("form_update_mode", defaults.form_update_mode),
        periodic_form_updates_check=source.get(
            "periodic_form_updates_check", defaults.periodic_form_updates_check
        ),
        autosend=source.get("autosend", defaults.autosend),
        image_size=source.get("image_size", defaults.image_size),
        app_language=source.get("app_language", defaults.app_language),
        admin_password=source.get("admin_pw") or None,
    )
    try:
        options.check()
    except ValueError as exc:
        raise errors.UnexpectedValue(field="settings", reason=str(exc)) from None
    server_url = f"{base_url()}/v1/key/{token}/projects/{project_id}"
    body = collect.settings(server_url, project.name, app_user.actor.display_name, options)
    return jsonify({"settings": body, "payload": collect.encode(body)})


# ---- assignments -----------------------------------------------------------------------------


def _form_id(project_id: int, xml_form_id: str) -> int:
    return forms.get_form(db.session(), project_id, xml_form_id).id


def _assignments_json(found: list[Assignment]):
    return jsonify([{"actorId": a.actor_id, "roleId": a.role_id} for a in found])


def _role_id(role: str | None) -> int | None:
    return accounts.find_role(db.session(), role).id if role is not None else None


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/assignments")
@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/assignments/<role>")
def list_form_assignments(project_id: int, xml_form_id: str, role: str | None = None):
    """List who holds which role on a form."""
    form_id = _form_id(project_id, xml_form_id)
    access.require("assignment.list", project_id=project_id, form_id=form_id)
    return _assignments_json(
        accounts.list_assignments(db.session(), form_id=form_id, role_id=_role_id(role))
    )


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/assignments/<role>/<int:actor_id>")
def assign_on_form(project_id: int, xml_form_id: str, role: str, actor_id: int):
    """Give an actor a role on a form (pyodk: role 2 gives an app user access to a form)."""
    form_id = _form_id(project_id, xml_form_id)
    me = access.require("assignment.create", project_id=project_id, form_id=form_id)
    actor = members.assignable_actor(db.session(), project_id, actor_id)
    role_id = accounts.find_role(db.session(), role).id
    members.assign_role(
        db.session(), actor.id, role_id, project_id=project_id, form_id=form_id, by=me.id
    )
    return jsonify(success())


@bp.delete("/projects/<int:project_id>/forms/<xml_form_id>/assignments/<role>/<int:actor_id>")
def unassign_on_form(project_id: int, xml_form_id: str, role: str, actor_id: int):
    """Take a role on a form away from an actor."""
    form_id = _form_id(project_id, xml_form_id)
    me = access.require("assignment.delete", project_id=project_id, form_id=form_id)
    role_id = accounts.find_role(db.session(), role).id
    members.unassign_role(
        db.session(), actor_id, role_id, project_id=project_id, form_id=form_id, by=me.id
    )
    access.forget_grants()  # the actor may have taken a role away from itself
    return jsonify(success())


@bp.get("/projects/<int:project_id>/assignments")
@bp.get("/projects/<int:project_id>/assignments/<role>")
def list_project_assignments(project_id: int, role: str | None = None):
    """List who holds which role on a project."""
    projects.get(db.session(), project_id)
    access.require("assignment.list", project_id=project_id)
    return _assignments_json(
        accounts.list_assignments(db.session(), project_id=project_id, role_id=_role_id(role))
    )


@bp.post("/projects/<int:project_id>/assignments/<role>/<int:actor_id>")
def assign_on_project(project_id: int, role: str, actor_id: int):
    """Give an actor a role on a project (manager, viewer, data collector)."""
    projects.get(db.session(), project_id)
    me = access.require("assignment.create", project_id=project_id)
    target = accounts.find_role(db.session(), role)
    if target.system in ("admin", "app-user"):
        raise errors.UnexpectedValue(field="roleId", reason=_("not a project role"))
    actor = members.assignable_actor(db.session(), project_id, actor_id)
    members.assign_role(db.session(), actor.id, target.id, project_id=project_id, by=me.id)
    return jsonify(success())


@bp.delete("/projects/<int:project_id>/assignments/<role>/<int:actor_id>")
def unassign_on_project(project_id: int, role: str, actor_id: int):
    """Take a project role away from an actor."""
    projects.get(db.session(), project_id)
    me = access.require("assignment.delete", project_id=project_id)
    role_id = accounts.find_role(db.session(), role).id
    members.unassign_role(db.session(), actor_id, role_id, project_id=project_id, by=me.id)
    access.forget_grants()  # the actor may have taken a role away from itself
    return jsonify(success())
