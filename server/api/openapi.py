"""The OpenAPI 3 document of the whole ``/v1`` API, served at ``GET /v1/openapi.json``.

It is generated, so it cannot drift from the routes: every rule of the app's URL map under
``/v1`` becomes an operation (path parameters from the rule's converters, the summary from the
view's docstring), and the request and response schemas are the marshmallow schemas the views
declare with :func:`server.api.schemas.documented`. Routes whose views declare nothing are
still listed, answering JSON.
"""

from __future__ import annotations

import re
from typing import Any

from flask import current_app, jsonify
from marshmallow import Schema, fields

from server import __version__
from server.api import schemas as S
from server.api.blueprint import bp

_ARGUMENT = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
_IGNORED_METHODS = {"HEAD", "OPTIONS"}

# Views of modules that predate the schemas: what they answer, for the document.
KNOWN_RESPONSES: dict[str, tuple[type[Schema], bool]] = {
    "server.api.sessions.create_session": (S.SessionOut, False),
    "server.api.sessions.current_user": (S.UserOut, False),
    "server.api.projects.list_projects": (S.ProjectOut, True),
    "server.api.projects.create_project": (S.ProjectOut, False),
    "server.api.projects.get_project": (S.ProjectOut, False),
    "server.api.projects.update_project": (S.ProjectOut, False),
    "server.api.projects.delete_project": (S.SuccessOut, False),
    "server.api.users.list_users": (S.UserOut, True),
    "server.api.users.create_user": (S.UserOut, False),
    "server.api.users.get_user": (S.UserOut, False),
    "server.api.users.update_user": (S.UserOut, False),
    "server.api.app_users.list_app_users": (S.AppUserOut, True),
    "server.api.app_users.create_app_user": (S.AppUserOut, False),
    "server.api.app_users.delete_app_user": (S.SuccessOut, False),
    "server.api.app_users.assign_on_form": (S.SuccessOut, False),
    "server.api.forms.create_form": (S.FormOut, False),
    "server.api.forms.list_forms": (S.FormOut, True),
    "server.api.forms.get_form": (S.FormOut, False),
    "server.api.forms.update_form": (S.FormOut, False),
    "server.api.forms.list_versions": (S.FormOut, True),
    "server.api.forms.get_draft": (S.FormOut, False),
    "server.api.forms.create_draft": (S.SuccessOut, False),
    "server.api.forms.publish_draft": (S.SuccessOut, False),
    "server.api.forms.delete_draft": (S.SuccessOut, False),
    "server.api.forms.list_attachments": (S.FormAttachmentOut, True),
    "server.api.forms.list_draft_attachments": (S.FormAttachmentOut, True),
    "server.api.forms.upload_draft_attachment": (S.FormAttachmentOut, False),
}
KNOWN_BODIES: dict[str, tuple[type[Schema] | None, str]] = {
    "server.api.sessions.create_session": (S.SessionIn, "application/json"),
    "server.api.forms.create_form": (None, "application/octet-stream"),
    "server.api.forms.create_draft": (None, "application/octet-stream"),
    "server.api.forms.upload_draft_attachment": (None, "application/octet-stream"),
}

_FIELD_TYPES: list[tuple[type[fields.Field], dict[str, Any]]] = [
    (S.Timestamp, {"type": "string", "format": "date-time"}),
    (fields.Boolean, {"type": "boolean"}),
    (fields.Integer, {"type": "integer"}),
    (fields.Float, {"type": "number"}),
    (fields.String, {"type": "string"}),
    (fields.Dict, {"type": "object"}),
    (fields.Raw, {}),
]


def _field_schema(field: fields.Field, components: dict[str, Any]) -> dict[str, Any]:
    if isinstance(field, fields.Nested):
        nested = field.nested if isinstance(field.nested, type) else type(field.nested)
        reference = {"$ref": f"#/components/schemas/{_component(nested, components)}"}
        if field.many:
            return {"type": "array", "items": reference}
        return {"anyOf": [reference, {"type": "null"}]} if field.allow_none else reference
    if isinstance(field, fields.List):
        out: dict[str, Any] = {"type": "array", "items": _field_schema(field.inner, components)}
    else:
        out = next((dict(s) for kind, s in _FIELD_TYPES if isinstance(field, kind)), {})
    description = field.metadata.get("description")
    if description:
        out["description"] = description
    if field.allow_none and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _component(schema: type[Schema], components: dict[str, Any]) -> str:
    """Add a marshmallow schema to the components (once); return its name."""
    name = schema.__name__
    if name in components:
        return name
    components[name] = {}  # placeholder against recursion
    instance = schema()
    properties = {}
    required = []
    for key, field in instance.fields.items():
        properties[field.data_key or key] = _field_schema(field, components)
        if field.required or issubclass(schema, S.Output):
            required.append(field.data_key or key)
    components[name] = {"type": "object", "properties": properties}
    if required:
        components[name]["required"] = required
    return name


def _path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    parameters = []

    def replace(match: re.Match[str]) -> str:
        converter, name = match.group(1) or "string", match.group(2)
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer"} if converter == "int" else {"type": "string"},
            }
        )
        return "{" + name + "}"

    return _ARGUMENT.sub(replace, rule), parameters


def _json_content(schema: type[Schema], many: bool, components: dict[str, Any]) -> dict:
    reference = {"$ref": f"#/components/schemas/{_component(schema, components)}"}
    return {
        "application/json": {"schema": {"type": "array", "items": reference} if many else reference}
    }


def _operation(rule: Any, method: str, components: dict[str, Any]) -> dict[str, Any]:
    view = current_app.view_functions[rule.endpoint]
    key = f"{view.__module__}.{view.__name__}"
    docs = S.ROUTE_DOCS.get(key, {})
    summary = (view.__doc__ or rule.endpoint).strip().splitlines()[0]
    _, parameters = _path(rule.rule)
    for name, kind in (docs.get("query") or {}).items():
        parameters.append(
            {"name": name, "in": "query", "required": False, "schema": {"type": kind}}
        )
    operation: dict[str, Any] = {
        "operationId": rule.endpoint.split(".", 1)[-1] + f"_{method.lower()}",
        "summary": summary,
        "tags": [view.__module__.rsplit(".", 1)[-1]],
        "parameters": parameters,
    }
    response: dict[str, Any] = {"description": "Success"}
    if docs.get("response") is not None:
        response["content"] = _json_content(docs["response"], docs.get("many", False), components)
    elif docs.get("content"):
        response["content"] = {docs["content"]: {"schema": {}}}
    elif key in KNOWN_RESPONSES:
        schema, many = KNOWN_RESPONSES[key]
        response["content"] = _json_content(schema, many, components)
    else:
        response["content"] = {"application/json": {"schema": {}}}
    problem = {"$ref": f"#/components/schemas/{_component(S.ProblemOut, components)}"}
    operation["responses"] = {
        "200": response,
        "default": {
            "description": "A problem: Central's {code, message, details}",
            "content": {"application/json": {"schema": problem}},
        },
    }
    if method in ("POST", "PUT", "PATCH"):
        body = docs.get("body")
        content_type = docs.get("body_content")
        if body is None and key in KNOWN_BODIES:
            body, content_type = KNOWN_BODIES[key]
        if body is not None:
            reference = {"$ref": f"#/components/schemas/{_component(body, components)}"}
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": reference}},
            }
        elif content_type:
            operation["requestBody"] = {
                "required": True,
                "content": {content_type: {"schema": {"type": "string", "format": "binary"}}},
            }
    return operation


def _methods(rule: Any) -> list[str]:
    return sorted(set(rule.methods or ()) - _IGNORED_METHODS)


def document() -> dict[str, Any]:
    """Build the OpenAPI document from the current app's routes."""
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for rule in sorted(current_app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith("/v1/") and rule.rule != "/v1":
            continue
        path, _ = _path(rule.rule)
        for method in _methods(rule):
            operation = _operation(rule, method, components)
            # One view may serve several rules (with and without an optional segment).
            base, number = operation["operationId"], 2
            while operation["operationId"] in used:
                operation["operationId"] = f"{base}_{number}"
                number += 1
            used.add(operation["operationId"])
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "merit-collect API",
            "version": __version__,
            "description": (
                "ODK Central-compatible REST API (pyodk, ruODK, Power BI via OData). Problems "
                "answer Central's JSON {code, message, details}; X-Extended-Metadata: true adds "
                "the related objects. App users may call it with the /v1/key/<token> prefix."
            ),
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


@bp.get("/openapi.json")
def openapi_document():
    """Return this API's OpenAPI 3 document (generated from the routes and their schemas)."""
    return jsonify(document())
