"""Public links of a form, in ODK Central's shapes.

GET, POST       /v1/projects/<p>/forms/<f>/public-links
DELETE          /v1/projects/<p>/forms/<f>/public-links/<id>

A link is ``{id, type: "public_link", displayName, once, token, createdAt, updatedAt,
deletedAt}`` (``token`` null once revoked). Its holder fills the form in a browser at
``/-/<token>`` (:mod:`server.web.pages.webforms`) and can do nothing else. Creating and deleting
a link are audited by :mod:`server.auth.public_links`.
"""

from __future__ import annotations

from flask import current_app, jsonify

from server import db
from server.api import schemas
from server.api.blueprint import bp
from server.api.render import iso, json_body, success
from server.auth import access, public_links
from server.auth.models import PublicLink
from server.forms import services as forms
from server.forms.models import Form


def public_link_json(link: PublicLink) -> dict:
    """Render a public link as Central does."""
    actor = link.actor
    return {
        "id": actor.id,
        "type": "public_link",
        "displayName": actor.display_name,
        "once": link.once,
        "token": public_links.token_of(link, secret_key=current_app.config["SECRET_KEY"]),
        "createdAt": iso(actor.created_at),
        "updatedAt": iso(actor.updated_at),
        "deletedAt": iso(actor.deleted_at),
    }


def _form(project_id: int, xml_form_id: str, verb: str) -> tuple[Form, int]:
    form = forms.get_form(db.session(), project_id, xml_form_id)
    actor = access.require(verb, project_id=project_id, form_id=form.id)
    return form, actor.id


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/public-links")
@schemas.documented(response=schemas.PublicLinkOut, many=True)
def list_public_links(project_id: int, xml_form_id: str):
    """List a form's public links, working ones first, newest first."""
    form, _ = _form(project_id, xml_form_id, "public_link.list")
    return jsonify([public_link_json(link) for link in public_links.for_form(db.session(), form)])


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/public-links")
@schemas.documented(body=schemas.PublicLinkIn, response=schemas.PublicLinkOut)
def create_public_link(project_id: int, xml_form_id: str):
    """Create a public link (``{displayName, once}``); the answer carries its token."""
    form, actor_id = _form(project_id, xml_form_id, "public_link.create")
    body = schemas.load(schemas.PublicLinkIn(), json_body())
    link, _token = public_links.create_link(
        db.session(),
        form,
        body["displayName"],
        once=body["once"],
        secret_key=current_app.config["SECRET_KEY"],
        by=actor_id,
    )
    return jsonify(public_link_json(link))


@bp.delete("/projects/<int:project_id>/forms/<xml_form_id>/public-links/<int:link_id>")
@schemas.documented(response=schemas.SuccessOut)
def delete_public_link(project_id: int, xml_form_id: str, link_id: int):
    """Delete a public link: its token stops working at once."""
    form, actor_id = _form(project_id, xml_form_id, "public_link.delete")
    link = public_links.get(db.session(), form, link_id)
    public_links.delete_link(db.session(), link, by=actor_id)
    return jsonify(success())
