"""App users: one per tablet, its QR code that configures ODK Collect, its forms, revocation.

The QR code is drawn on the server (segno, SVG) from the Collect settings of
:mod:`server.openrosa.settings`: the server address with the app user's token, how forms update,
when records are sent, photo size, and an optional admin password. The settings are chosen in a
small form sent by POST, so the admin password never appears in a URL or an access log.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Response, current_app, flash, redirect, request, url_for
from flask_babel import gettext, lazy_gettext

from server import db, errors
from server.auth import access, app_users, members
from server.auth.models import AppUser
from server.forms import services as forms
from server.openrosa import settings as collect
from server.openrosa.protocol import base_url, is_loopback, is_loopback_host
from server.projects.models import Project
from server.web import common, qr
from server.web.views import bp

# The choices of the settings form, in plain words.
UPDATE_MODES = {
    "match_exactly": lazy_gettext("Keep exactly the server's forms (recommended)"),
    "previously_downloaded": lazy_gettext("Update the forms already on the tablet"),
    "manual": lazy_gettext("Only when the enumerator asks"),
}
AUTOSEND = {
    "wifi_and_cellular": lazy_gettext("Over Wi-Fi or mobile data"),
    "wifi_only": lazy_gettext("Over Wi-Fi only"),
    "cellular_only": lazy_gettext("Over mobile data only"),
    "off": lazy_gettext("Never (the enumerator sends by hand)"),
}
IMAGE_SIZES = {
    "small": lazy_gettext("Small (640 px, recommended on weak networks)"),
    "very_small": lazy_gettext("Very small (320 px)"),
    "medium": lazy_gettext("Medium (1024 px)"),
    "large": lazy_gettext("Large (3072 px)"),
    "original_image_size": lazy_gettext("Original size"),
}
UPDATE_CHECKS = {
    "every_fifteen_minutes": lazy_gettext("Every 15 minutes"),
    "every_one_hour": lazy_gettext("Every hour"),
    "every_six_hours": lazy_gettext("Every 6 hours"),
    "every_24_hours": lazy_gettext("Every 24 hours"),
}
APP_LANGUAGES = {"fr": lazy_gettext("French"), "en": lazy_gettext("English")}


@bp.get("/projects/<int:project_id>/app-users")
def app_user_list(project_id: int) -> Response:
    """List the project's app users (tablets) and offer to create one."""
    project = common.project_for(project_id, "field_key.list")
    db_session = db.session()
    found = members.app_users(db_session, project.id)
    return common.page(
        "web/app_users.html",
        project=project,
        app_users=found,
        assigned=members.app_user_form_ids(db_session, [a.actor_id for a in found]),
    )


@bp.post("/projects/<int:project_id>/app-users")
def create_app_user(project_id: int) -> Response:
    """Create an app user for one tablet; all the project's forms are assigned to it."""
    project = common.project_for(project_id, "field_key.create")
    actor = access.require_actor()
    name = request.form.get("name", "").strip()
    if not name:
        raise errors.FieldValueRefused(
            field=gettext("Name"), reason=gettext("give the tablet a name")
        )
    db_session = db.session()
    # A new tablet usually fills every form of its project that is not closed; its page lets
    # the coordinator change that.
    open_forms = (
        [f.id for f in forms.list_forms(db_session, project.id) if f.state != "closed"]
        if access.can("assignment.create", project_id=project.id)
        else []
    )
    app_user = members.create_app_user(
        db_session,
        project.id,
        name,
        secret_key=current_app.config["SECRET_KEY"],
        actor_id=actor.id,
        form_ids=open_forms,
    )
    flash(gettext("App user “%(name)s” created. Scan its QR code with the tablet.", name=name))
    return redirect(
        url_for("web.app_user", project_id=project.id, actor_id=app_user.actor_id), code=303
    )


def _options(source: Mapping[str, str]) -> collect.CollectOptions:
    """Read the Collect settings chosen in the form (defaults for what is not given)."""
    defaults = collect.CollectOptions()
    options = collect.CollectOptions(
        form_update_mode=source.get("form_update_mode") or defaults.form_update_mode,
        periodic_form_updates_check=source.get("periodic_form_updates_check")
        or defaults.periodic_form_updates_check,
        autosend=source.get("autosend") or defaults.autosend,
        image_size=source.get("image_size") or defaults.image_size,
        app_language=source.get("app_language") or common.ui_language(),
        admin_password=source.get("admin_password") or None,
    )
    try:
        options.check()
    except ValueError as exc:
        raise errors.FieldValueRefused(field=gettext("Settings"), reason=str(exc)) from None
    return options


def _page(project: Project, app_user: AppUser, options: collect.CollectOptions) -> Response:
    db_session = db.session()
    project_forms = forms.list_forms(db_session, project.id)
    token = app_users.token_of(app_user, secret_key=current_app.config["SECRET_KEY"])
    payload = svg = None
    settings = None
    # The address in the code is this machine's own (the console opened at 127.0.0.1 and no
    # MERIT_PUBLIC_URL): a tablet could not reach it, and the page says how to fix it.
    unreachable = is_loopback(base_url())
    if token is not None:
        server_url = f"{base_url()}/v1/key/{token}/projects/{project.id}"
        settings = collect.settings(server_url, project.name, app_user.actor.display_name, options)
        payload = collect.encode(settings)
        svg = qr.svg(payload)
    return common.page(
        "web/app_user.html",
        project=project,
        app_user=app_user,
        options=options,
        settings=settings,
        payload=payload,
        qr_svg=svg,
        unreachable=unreachable,
        listens_on_loopback=is_loopback_host(current_app.config["HOST"]),
        server_address=base_url(),
        forms=project_forms,
        titles=forms.titles(db_session, project_forms),
        assigned=members.app_user_form_ids(db_session, [app_user.actor_id])[app_user.actor_id],
        update_modes=UPDATE_MODES,
        autosend=AUTOSEND,
        image_sizes=IMAGE_SIZES,
        update_checks=UPDATE_CHECKS,
        app_languages=APP_LANGUAGES,
    )


@bp.get("/projects/<int:project_id>/app-users/<int:actor_id>")
def app_user(project_id: int, actor_id: int) -> Response:
    """Show an app user's QR code (default settings), its forms and the revoke button."""
    project = common.project_for(project_id, "field_key.list")
    found = members.get_app_user(db.session(), project.id, actor_id)
    return _page(project, found, _options({}))


@bp.post("/projects/<int:project_id>/app-users/<int:actor_id>/qr")
def app_user_qr(project_id: int, actor_id: int) -> Response:
    """Show the QR code for the settings chosen in the form (POST: the admin password)."""
    project = common.project_for(project_id, "field_key.list")
    found = members.get_app_user(db.session(), project.id, actor_id)
    return _page(project, found, _options(request.form))


@bp.post("/projects/<int:project_id>/app-users/<int:actor_id>/forms")
def app_user_forms(project_id: int, actor_id: int) -> Response:
    """Choose which of the project's forms the tablet may fill."""
    project = common.project_for(project_id, "assignment.create")
    access.require("assignment.delete", project_id=project.id)
    actor = access.require_actor()
    found = members.get_app_user(db.session(), project.id, actor_id)
    try:
        form_ids = {int(v) for v in request.form.getlist("form_id")}
    except ValueError:
        raise errors.NotFound() from None
    members.set_app_user_forms(db.session(), found, form_ids, actor_id=actor.id)
    flash(gettext("The tablet's forms were saved."))
    return redirect(url_for("web.app_user", project_id=project.id, actor_id=actor_id), code=303)


@bp.post("/projects/<int:project_id>/app-users/<int:actor_id>/revoke")
def revoke_app_user(project_id: int, actor_id: int) -> Response:
    """Revoke a tablet's access at once; the records it sent keep its name."""
    project = common.project_for(project_id, "field_key.delete")
    actor = access.require_actor()
    found = members.get_app_user(db.session(), project.id, actor_id)
    members.revoke_app_user(db.session(), found, actor_id=actor.id)
    flash(
        gettext(
            "“%(name)s” was revoked: the tablet can no longer download forms or send records.",
            name=found.actor.display_name,
        )
    )
    return redirect(url_for("web.app_user_list", project_id=project.id), code=303)
