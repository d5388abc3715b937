"""The ``api`` blueprint; importing this module registers every resource's routes."""

from __future__ import annotations

from importlib import import_module

from flask import Blueprint

from server import errors

bp = Blueprint("api", __name__, url_prefix="/v1")
errors.set_renderer("api", errors.render_json)

# Resource modules, each adding its routes to ``bp`` when imported.
RESOURCES = (
    "server.api.sessions",
    "server.api.projects",
    "server.api.users",
    "server.api.app_users",
    "server.api.public_links",
    "server.api.forms",
    "server.api.encryption",
    "server.api.exports",
    "server.api.submissions",
    "server.api.conflicts",
    "server.api.odata",
    "server.api.entities",
    "server.api.openapi",
)

for _name in RESOURCES:
    import_module(_name)
