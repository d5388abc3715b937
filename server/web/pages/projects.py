"""Projects (list, create, archive), their forms and members; web users for administrators."""

from __future__ import annotations

from typing import Any

from flask import Response, flash, redirect, request, url_for
from flask_babel import gettext

from server import db, errors
from server.auth import access, members, roles
from server.auth import services as accounts
from server.forms import services as forms
from server.projects import services as projects
from server.projects.models import Project
from server.submissions import overview
from server.web import common
from server.web.views import bp


def project_list() -> Response:
    """Render the projects the signed-in person may see (the console's home page)."""
    access.require_actor()
    db_session = db.session()
    show_archived = request.args.get("archived") == "1"
    visible = projects.visible(db_session, access.visible_project_ids(), archived=show_archived)
    counts = projects.counts(db_session, [p.id for p in visible])
    return common.page(
        "web/projects.html",
        projects=visible,
        counts=counts,
        show_archived=show_archived,
        may_create=access.can("project.create"),
    )


@bp.get("/projects")
def projects_index() -> Response:
    """The projects list lives at the console's home page (with the same query)."""
    home = url_for("web.index")
    query = request.query_string.decode("latin-1")
    return common.redirect_next(f"{home}?{query}" if query else home, home)


@bp.post("/projects")
def create_project() -> Response:
    """Create a project (administrators)."""
    actor = access.require("project.create")
    name = request.form.get("name", "").strip()
    if not name:
        raise errors.FieldValueRefused(
            field=gettext("Name"), reason=gettext("a project needs a name")
        )
    project = projects.create(
        db.session(), name, request.form.get("description") or None, by=actor.id
    )
    flash(gettext("Project “%(name)s” created.", name=project.name))
    return redirect(url_for("web.project", project_id=project.id), code=303)


@bp.get("/projects/<int:project_id>")
def project(project_id: int) -> Response:
    """Show a project's forms and the upload of a new form."""
    found = common.project_for(project_id)
    return project_page(found)


def project_page(found: Project, *, status: int = 200, **extra: Any) -> Response:
    """Render a project's forms page (also after a refused upload, with its problems)."""
    db_session = db.session()
    project_forms = forms.list_forms(db_session, found.id)
    versions = {f.id: forms.current_version(db_session, f) for f in project_forms}
    drafts = {f.id for f in project_forms if f.draft_version_id is not None}
    counts = (
        overview.record_counts(db_session, [f.id for f in project_forms])
        if access.can("submission.list", project_id=found.id)
        else {}
    )
    return common.page(
        "web/project.html",
        status=status,
        project=found,
        forms=project_forms,
        versions=versions,
        drafts=drafts,
        counts=counts,
        **extra,
    )


@bp.post("/projects/<int:project_id>/archive")
def archive_project(project_id: int) -> Response:
    """Archive a project (hidden from the list, data kept), or bring it back."""
    found = common.project_for(project_id, "project.update")
    archived = request.form.get("archived") == "1"
    projects.update(db.session(), found, archived=archived, by=access.require_actor().id)

    flash(
        gettext("The project was archived.")
        if archived
        else gettext("The project is active again.")
    )
    return redirect(url_for("web.project", project_id=found.id), code=303)


# ---- members ---------------------------------------------------------------------------------


@bp.get("/projects/<int:project_id>/members")
def project_members(project_id: int) -> Response:
    """List who holds which role over the project."""
    found = common.project_for(project_id, "assignment.list")
    db_session = db.session()
    return common.page(
        "web/members.html",
        project=found,
        members=members.project_members(db_session, found.id),
        roles=members.PROJECT_ROLES,
        role_names=roles.WORDS,
        users=accounts.list_users(db_session) if access.can("user.list") else [],
    )


@bp.post("/projects/<int:project_id>/members")
def add_project_member(project_id: int) -> Response:
    """Give an existing user (by email) a role over the project."""
    found = common.project_for(project_id, "assignment.create")
    actor = access.require_actor()
    role = request.form.get("role", "")
    user = members.add_member(
        db.session(), found.id, request.form.get("email", ""), role, actor_id=actor.id
    )
    flash(
        gettext("%(email)s now has this role: %(role)s.", email=user.email, role=roles.word(role))
    )
    return redirect(url_for("web.project_members", project_id=found.id), code=303)


@bp.post("/projects/<int:project_id>/members/<int:member_id>/remove")
def remove_project_member(project_id: int, member_id: int) -> Response:
    """Take a project role away from a user."""
    found = common.project_for(project_id, "assignment.delete")
    actor = access.require_actor()
    members.remove_member(
        db.session(), found.id, member_id, request.form.get("role", ""), actor_id=actor.id
    )
    flash(gettext("The role was removed."))
    return redirect(url_for("web.project_members", project_id=found.id), code=303)


# ---- web users (administrators) --------------------------------------------------------------


@bp.get("/users")
def users() -> Response:
    """List web users and offer to create one (administrators)."""
    access.require("user.list")
    db_session = db.session()
    return common.page(
        "web/users.html",
        users=accounts.list_users(db_session),
        admins=accounts.site_admin_ids(db_session),
    )


@bp.post("/users")
def create_user() -> Response:
    """Create a web user with a first password (administrators)."""
    actor = access.require("user.create")
    user = members.create_account(
        db.session(),
        request.form.get("email", ""),
        request.form.get("password", ""),
        display_name=request.form.get("display_name") or None,
        admin=request.form.get("admin") == "1",
        actor_id=actor.id,
    )
    flash(gettext("Account %(email)s created.", email=user.email))
    return redirect(url_for("web.users"), code=303)
