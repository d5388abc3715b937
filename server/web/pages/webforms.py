"""Forms filled in the browser with ODK Web Forms (issue 18, item 4).

    /projects/<p>/forms/<f>/fill                             a member who may submit fills the
                                                             published form (office entry)
    /projects/<p>/forms/<f>/draft/fill                       a coordinator tries the draft and
                                                             sends test records
    /projects/<p>/forms/<f>/submissions/<instanceID>/edit    a coordinator edits a record
    /-/<token>                                               a public link's holder fills its form
    POST /projects/<p>/forms/<f>/public-links                a coordinator creates a link
    POST /projects/<p>/forms/<f>/public-links/<id>/revoke    ... and revokes one

Each page is a console page holding ODK Web Forms (``static/webforms/``, built from
``webforms/`` by scripts/build_webforms.py): the engine runs in the browser, fetches the XForm,
its media and (to edit) the record from the server's own routes, and sends records as ODK
Collect does, multipart to the OpenRosa submission route, so the same intake takes them
(duplicates, attachments, ``deprecatedID`` for edits). A public link's page uses the link's
token as a tablet uses its own (``/v1/key/<token>/...``): it opens that form and nothing else.

These pages get their own Content-Security-Policy (:func:`server.web.security.webform_page`):
the console's, plus what the engine needs.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from flask import Response, current_app, flash, g, redirect, request, url_for
from flask_babel import gettext

from server import db, errors
from server.auth import access, public_links
from server.forms import services as forms
from server.forms.models import Form, FormVersion
from server.openrosa.protocol import advertised_upload_bytes, base_url
from server.projects.models import Project
from server.submissions import services as submissions
from server.web import common, security
from server.web.views import bp

F = "/projects/<int:project_id>/forms/<xml_form_id>"


def _words() -> dict[str, str]:
    """What the page's script says, in the page's language."""
    return {
        "loading": gettext("Loading the form…"),
        "loadFailed": gettext("The form could not be loaded. Reload the page to try again."),
        "sending": gettext("Sending the record…"),
        "sent": gettext("Record received."),
        "failed": gettext("The record was not received"),
        "offline": gettext(
            "The server could not be reached: the record was not sent. Check the connection "
            "and press Send again; nothing you entered is lost."
        ),
        "notReady": gettext(
            "Some answers break the form's rules or are missing: correct them, then send."
        ),
        "onceDone": gettext("Thank you: your answers have been received."),
    }


def _page(
    project: Project | None,
    form: Form,
    version: FormVersion,
    *,
    mode: str,
    form_url: str,
    media_url: str,
    submit_url: str,
    **extra: Any,
) -> Response:
    """Render the page holding ODK Web Forms, with the Web Forms policy."""
    config = {
        "form-url": form_url,
        "media-url": media_url,
        "submit-url": submit_url,
        "csrf": _csrf() if mode != "public" else "",
        "lang": common.ui_language(),
        "max-bytes": str(advertised_upload_bytes(current_app.config["MAX_UPLOAD_BYTES"])),
    }
    config.update({k: v for k, v in extra.pop("config", {}).items() if v is not None})
    response = common.page(
        "web/webform.html",
        project=project,
        form=form,
        version=version,
        mode=mode,
        config=config,
        # JSON in a <script type="application/json">: no "<" may close it early.
        words=json.dumps(_words(), ensure_ascii=False).replace("<", "\\u003c"),
        **extra,
    )
    return security.webform_page(response)


def _csrf() -> str:
    """The console session's CSRF token, which the script sends with each record."""
    auth_session = g.get("auth_session")
    return auth_session.csrf if auth_session is not None and auth_session.csrf else ""


def _api(project_id: int, form: Form) -> str:
    return f"/v1/projects/{project_id}/forms/{quote(form.xml_form_id, safe='')}"


@bp.get(F + "/fill")
def fill(project_id: int, xml_form_id: str) -> Response:
    """Fill the published form in the browser (whoever may send records to it)."""
    project, form = common.form_for(project_id, xml_form_id, "submission.create")
    version = forms.published_version(db.session(), form)
    base = _api(project.id, form)
    return _page(
        project,
        form,
        version,
        mode="fill",
        form_url=f"{base}.xml",
        media_url=f"{base}/attachments/",
        submit_url=f"/v1/projects/{project.id}/submission",
    )


@bp.get(F + "/draft/fill")
def fill_draft(project_id: int, xml_form_id: str) -> Response:
    """Try the draft in the browser; records sent are test records, kept apart."""
    project, form = common.form_for(project_id, xml_form_id, "form.update")
    version = forms.draft_version(db.session(), form)
    if version is None:
        raise errors.DraftNotFound()
    base = _api(project.id, form)
    return _page(
        project,
        form,
        version,
        mode="draft",
        form_url=f"{base}/draft.xml",
        media_url=f"{base}/draft/attachments/",
        submit_url=f"{base}/draft/submission",
    )


@bp.get(F + "/submissions/<instance_id>/edit")
def edit_submission(project_id: int, xml_form_id: str, instance_id: str) -> Response:
    """Edit a record in the browser: the new version names the current one (deprecatedID)."""
    project, form = common.form_for(project_id, xml_form_id, "submission.update")
    db_session = db.session()
    record = submissions.get(db_session, form.id, instance_id)
    current = submissions.current_version(db_session, record)
    version = db_session.get(FormVersion, current.form_version_id)
    if version is None or version.published_at is None:
        raise errors.NotFound()
    files = [a.name for a, blob in submissions.attachments(db_session, current) if blob]
    base = _api(project.id, form)
    record_base = f"{base}/submissions/{quote(record.instance_id, safe='')}"
    version_url = url_for(
        "web.download_media",
        project_id=project.id,
        xml_form_id=form.xml_form_id,
        version_id=version.id,
        name="-",
    )
    return _page(
        project,
        form,
        version,
        mode="edit",
        form_url=url_for(
            "web.download_xform",
            project_id=project.id,
            xml_form_id=form.xml_form_id,
            version_id=version.id,
        ),
        media_url=version_url[:-1],
        submit_url=f"/v1/projects/{project.id}/submission",
        record=record,
        config={
            "instance-url": f"{record_base}.xml",
            "instance-files": json.dumps(files),
            "instance-file-url": f"{record_base}/attachments/",
            "done-url": url_for(
                "web.submission",
                project_id=project.id,
                xml_form_id=form.xml_form_id,
                instance_id=record.instance_id,
            ),
        },
    )


@bp.get("/-/<token>")
def public_form(token: str) -> Response:
    """A public link's page: its holder fills the form, without an account."""
    link = public_links.find_by_token(db.session(), token)
    if link is None:
        raise errors.NotFound()
    form = db.session().get(Form, link.form_id)
    version = forms.published_version(db.session(), form)
    base = f"/v1/key/{token}/projects/{form.project_id}"
    api = f"{base}/forms/{quote(form.xml_form_id, safe='')}"
    return _page(
        None,
        form,
        version,
        mode="public",
        form_url=f"{api}.xml",
        media_url=f"{api}/attachments/",
        submit_url=f"{base}/submission",
        config={"once-key": str(link.actor_id) if link.once else None},
    )


# ---- public links in the console ------------------------------------------------------------


@bp.post(F + "/public-links")
def create_public_link(project_id: int, xml_form_id: str) -> Response:
    """Create a public link to the form (coordinators); it is shown on the form's page."""
    project, form = common.form_for(project_id, xml_form_id, "public_link.create")
    actor = access.require_actor()
    name = (request.form.get("name") or "").strip()
    if not name:
        raise errors.FieldValueRefused(
            field=gettext("Name of the link"), reason=gettext("required"), name="name"
        )
    public_links.create_link(
        db.session(),
        form,
        name,
        once=request.form.get("once") == "1",
        secret_key=current_app.config["SECRET_KEY"],
        by=actor.id,
    )
    flash(gettext("Public link created: anyone holding it can fill this form."))
    return _to_links(project, form)


@bp.post(F + "/public-links/<int:link_id>/revoke")
def revoke_public_link(project_id: int, xml_form_id: str, link_id: int) -> Response:
    """Revoke a public link: it stops working at once."""
    project, form = common.form_for(project_id, xml_form_id, "public_link.delete")
    actor = access.require_actor()
    link = public_links.get(db.session(), form, link_id)
    if link.token_hash is not None:
        public_links.revoke_link(db.session(), link, by=actor.id)
    flash(gettext("Public link revoked."))
    return _to_links(project, form)


def _to_links(project: Project, form: Form) -> Response:
    target = url_for("web.form", project_id=project.id, xml_form_id=form.xml_form_id)
    return redirect(target + "#public-links", code=303)


def links_of(form: Form) -> list[tuple[Any, str | None]]:
    """Return the form's public links with each one's address (None once revoked)."""
    secret = current_app.config["SECRET_KEY"]
    found = []
    for link in public_links.for_form(db.session(), form):
        token = public_links.token_of(link, secret_key=secret)
        address = base_url() + url_for("web.public_form", token=token) if token else None
        found.append((link, address))
    return found
