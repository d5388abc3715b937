"""Entity lists (datasets) and their entities, as ODK Central serves them (pyodk's
``entity_lists`` and ``entities``).

GET, POST           /v1/projects/<p>/datasets                       {name, approvalRequired}
GET, PATCH          /v1/projects/<p>/datasets/<name>                with its properties
POST                /v1/projects/<p>/datasets/<name>/properties     {name}
GET, POST           /v1/projects/<p>/datasets/<name>/entities       one {uuid?, label, data},
                                                                    or {entities, source}
GET, PATCH, DELETE  /v1/projects/<p>/datasets/<name>/entities/<uuid>
                                                  (PATCH: ?baseVersion=n or ?force=true)
GET                 /v1/projects/<p>/datasets/<name>/entities/<uuid>/versions
GET                 /v1/projects/<p>/datasets/<name>.svc[/$metadata|/Entities]

The OData ``Entities`` table pages newest first with ``$top`` (1000 by default) and a
``$skiptoken`` naming the last entity sent; ``$skip``, ``$count`` and ``$select`` work as for
submissions. ``$filter`` takes Central's fields for entities (:data:`FILTER_FIELDS`): ``__id``,
``__system/createdAt``, ``updatedAt``, ``deletedAt``, ``creatorId`` and ``conflict``, with the
submissions' operators and functions (:mod:`server.odata.table_filter`); like Central, it cannot
name the label or the list's properties (501.5). Deleted entities are left out unless the
filter names ``__system/deletedAt``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from flask import Response, jsonify, request
from flask_babel import gettext

from server import db, errors
from server.api.blueprint import bp
from server.api.render import iso, json_body, query_bool, query_int
from server.api.schemas import (
    DatasetDetailOut,
    DatasetExtendedOut,
    DatasetIn,
    DatasetOut,
    DatasetUpdateIn,
    EntityBulkIn,
    EntityExtendedOut,
    EntityIn,
    EntityOut,
    EntityUpdateIn,
    EntityVersionOut,
    PropertyIn,
    SuccessOut,
    documented,
    load,
)
from server.api.sessions import actor_json
from server.auth import access
from server.auth import services as accounts
from server.auth.models import Actor
from server.entities import services
from server.entities.models import Dataset, DatasetProperty, Entity, EntityVersion
from server.errors import PropertyNotFound
from server.odata import table_filter as odata_filter
from server.odata.format import FQDN_ROOT, sanitize
from server.openrosa.protocol import base_url, quoted
from server.projects import services as projects
from server.submissions import paging

PROJECT = "/projects/<int:project_id>"
DATASET = PROJECT + "/datasets/<name>"
DEFAULT_PAGE = 1000
MAX_PAGE = 5000
DELETED_AT = "__system/deletedAt"

# What ``$filter`` may name on the Entities table: Central's map for entities
# (``odataToColumnMap`` in lib/data/entity.js). Not the label nor the properties.
FILTER_FIELDS = {
    "__id": odata_filter.Field(Entity.uuid, odata_filter.TEXT),
    "__system/createdAt": odata_filter.Field(Entity.created_at, odata_filter.DATE),
    "__system/updatedAt": odata_filter.Field(Entity.updated_at, odata_filter.DATE),
    DELETED_AT: odata_filter.Field(Entity.deleted_at, odata_filter.DATE),
    "__system/creatorId": odata_filter.Field(Entity.creator_id, odata_filter.NUMBER),
    "__system/conflict": odata_filter.Field(services.CONFLICT, odata_filter.TEXT),
}


def _extended() -> bool:
    return request.headers.get("X-Extended-Metadata", "").strip().lower() == "true"


def _require(verb: str, project_id: int) -> int:
    projects.get(db.session(), project_id)
    return access.require(verb, project_id=project_id).id


def _dataset(project_id: int, name: str, verb: str) -> tuple[Dataset, int]:
    actor_id = _require(verb, project_id)
    return services.get_dataset(db.session(), project_id, name), actor_id


# ---- rendering -------------------------------------------------------------------------------


def dataset_json(summary: services.DatasetSummary, extended: bool) -> dict[str, Any]:
    """Render an entity list as Central does."""
    dataset = summary.dataset
    body = {
        "name": dataset.name,
        "projectId": dataset.project_id,
        "createdAt": dataset.created_at,
        "approvalRequired": dataset.approval_required,
        "ownerOnly": False,
    }
    if not extended:
        return DatasetOut().dump(body)
    body.update(entities=summary.entities, lastEntity=summary.last_entity, conflicts=0)
    return DatasetExtendedOut().dump(body)


def property_json(prop: DatasetProperty) -> dict[str, Any]:
    """Render a property: name, OData name, publication, the forms writing it (none here)."""
    return {
        "name": prop.name,
        "odataName": services.odata_name(prop.name),
        "publishedAt": iso(prop.published_at or prop.created_at),
        "forms": [],
    }


def _detail(dataset: Dataset) -> dict[str, Any]:
    props = services.properties(db.session(), dataset)
    return DatasetDetailOut().dump(
        {
            "name": dataset.name,
            "projectId": dataset.project_id,
            "createdAt": dataset.created_at,
            "approvalRequired": dataset.approval_required,
            "ownerOnly": False,
            "properties": [property_json(p) for p in props],
            "sourceForms": [],
            "linkedForms": [],
        }
    )


def version_json(version: EntityVersion) -> dict[str, Any]:
    """Render one version of an entity."""
    source = version.source or {}
    received = source.get("dataReceived") if isinstance(source, dict) else None
    if received is None:
        received = {"label": version.label, **(version.data or {})}
    return EntityVersionOut().dump(
        {
            "label": version.label,
            "current": version.current,
            "createdAt": version.created_at,
            "creatorId": version.creator_id,
            "userAgent": version.user_agent or "",
            "version": version.version,
            "baseVersion": version.base_version,
            "data": dict(version.data or {}),
            "dataReceived": received,
            "conflictingProperties": version.conflicting_properties,
            "source": {k: v for k, v in source.items() if k != "dataReceived"} or None,
        }
    )


def entity_json(row: services.EntityRow, actors: dict[int, Actor] | None = None) -> dict:
    """Render an entity with its current version (and its creator when extended)."""
    entity = row.entity
    body = {
        "uuid": entity.uuid,
        "creatorId": entity.creator_id,
        "createdAt": entity.created_at,
        "updatedAt": entity.updated_at,
        "deletedAt": entity.deleted_at,
        "conflict": entity.conflict,
        "currentVersion": version_json(row.version),
    }
    if actors is None:
        return EntityOut().dump(body)
    creator = actors.get(entity.creator_id) if entity.creator_id else None
    body["creator"] = actor_json(creator) if creator is not None else None
    return EntityExtendedOut().dump(body)


def _actors(rows: list[services.EntityRow]) -> dict[int, Actor] | None:
    if not _extended():
        return None
    return accounts.actors_by_id(db.session(), (r.entity.creator_id for r in rows))


# ---- entity lists ------------------------------------------------------------------------------


@bp.get(PROJECT + "/datasets")
@documented(response=DatasetExtendedOut, many=True)
def list_datasets(project_id: int):
    """List the project's entity lists (with counts when extended metadata is asked for)."""
    _require("dataset.list", project_id)
    extended = _extended()
    summaries = services.list_datasets(db.session(), project_id)
    return jsonify([dataset_json(s, extended) for s in summaries])


@bp.post(PROJECT + "/datasets")
@documented(body=DatasetIn, response=DatasetOut)
def create_dataset(project_id: int):
    """Create an entity list: {name, approvalRequired}; a name already used is 409.3."""
    actor_id = _require("dataset.create", project_id)
    body = load(DatasetIn(), json_body())
    dataset = services.create_dataset(
        db.session(),
        project_id,
        body["name"],
        approval_required=body["approvalRequired"],
        actor_id=actor_id,
    )
    return jsonify(dataset_json(services.DatasetSummary(dataset, 0, None), False))


@bp.get(DATASET)
@documented(response=DatasetDetailOut)
def get_dataset(project_id: int, name: str):
    """Return an entity list with its properties."""
    dataset, _ = _dataset(project_id, name, "dataset.list")
    return jsonify(_detail(dataset))


@bp.patch(DATASET)
@documented(body=DatasetUpdateIn, response=DatasetDetailOut)
def update_dataset(project_id: int, name: str):
    """Change an entity list's approvalRequired."""
    dataset, actor_id = _dataset(project_id, name, "dataset.update")
    body = load(DatasetUpdateIn(), json_body())
    services.update_dataset(
        db.session(), dataset, approval_required=body["approvalRequired"], actor_id=actor_id
    )
    return jsonify(_detail(dataset))


@bp.post(DATASET + "/properties")
@documented(body=PropertyIn, response=SuccessOut)
def add_dataset_property(project_id: int, name: str):
    """Add a property to an entity list: {name}."""
    dataset, actor_id = _dataset(project_id, name, "dataset.update")
    body = load(PropertyIn(), json_body())
    services.add_property(db.session(), dataset, body["name"], actor_id=actor_id)
    return jsonify({"success": True})


# ---- entities ----------------------------------------------------------------------------------


@bp.get(DATASET + "/entities")
@documented(response=EntityExtendedOut, many=True, query={"deleted": "boolean"})
def list_entities(project_id: int, name: str):
    """List an entity list's entities, newest first, with their current versions."""
    dataset, _ = _dataset(project_id, name, "entity.list")
    rows = services.entities(db.session(), dataset, deleted=query_bool("deleted", False))
    actors = _actors(rows)
    return jsonify([entity_json(r, actors) for r in rows])


@bp.post(DATASET + "/entities")
@documented(body=EntityIn, response=EntityOut)
def create_entities(project_id: int, name: str):
    """Create one entity ({uuid?, label, data}) or many ({entities: [...], source})."""
    dataset, actor_id = _dataset(project_id, name, "entity.create")
    body = json_body()
    user_agent = request.user_agent.string or None
    if "entities" in body:
        bulk = load(EntityBulkIn(), body)
        services.create_entities(
            db.session(),
            dataset,
            [services.NewEntity(e["uuid"], e["label"], e["data"]) for e in bulk["entities"]],
            actor_id=actor_id,
            user_agent=user_agent,
            source={k: v for k, v in bulk["source"].items() if v is not None},
        )
        return jsonify({"success": True})
    one = load(EntityIn(), body)
    [created] = services.create_entities(
        db.session(),
        dataset,
        [services.NewEntity(one["uuid"], one["label"], one["data"])],
        actor_id=actor_id,
        user_agent=user_agent,
    )
    return jsonify(entity_json(services.get_entity(db.session(), dataset, created.uuid)))


@bp.get(DATASET + "/entities/<uuid>")
@documented(response=EntityExtendedOut)
def get_entity(project_id: int, name: str, uuid: str):
    """Return one entity with its current version."""
    dataset, _ = _dataset(project_id, name, "entity.read")
    row = services.get_entity(db.session(), dataset, uuid)
    return jsonify(entity_json(row, _actors([row])))


@bp.patch(DATASET + "/entities/<uuid>")
@documented(
    body=EntityUpdateIn,
    response=EntityOut,
    query={"baseVersion": "integer", "force": "boolean", "resolve": "boolean"},
)
def update_entity(project_id: int, name: str, uuid: str):
    """Write a new version of an entity; ``?baseVersion=`` must be current, or ``?force=true``.

    ``?resolve=true`` clears the entity's conflict: alone (no label nor data), nothing else
    changes; with a change, the change is written and the conflict cleared together.
    """
    dataset, actor_id = _dataset(project_id, name, "entity.update")
    force = query_bool("force", False)
    resolve = query_bool("resolve", False)
    raw = request.get_data(cache=True)
    if resolve and not raw.strip(b" \r\n\t{}"):
        row = services.resolve_conflict(db.session(), dataset, uuid, actor_id=actor_id)
        return jsonify(entity_json(row))
    base_version = query_int("baseVersion", None, minimum=1)
    if not force and base_version is None:
        raise errors.MissingParameter(field="baseVersion")
    body = load(EntityUpdateIn(), json_body())
    row = services.update_entity(
        db.session(),
        dataset,
        uuid,
        label=body["label"],
        data=body["data"],
        base_version=base_version,
        force=force,
        actor_id=actor_id,
        user_agent=request.user_agent.string or None,
        resolve=resolve,
    )
    return jsonify(entity_json(row))


@bp.delete(DATASET + "/entities/<uuid>")
@documented(response=SuccessOut)
def delete_entity(project_id: int, name: str, uuid: str):
    """Delete an entity (its UUID cannot be used again)."""
    dataset, actor_id = _dataset(project_id, name, "entity.delete")
    services.delete_entity(db.session(), dataset, uuid, actor_id=actor_id)
    return jsonify({"success": True})


@bp.get(DATASET + "/entities/<uuid>/versions")
@documented(response=EntityVersionOut, many=True)
def list_entity_versions(project_id: int, name: str, uuid: str):
    """List every version of an entity, oldest first."""
    dataset, _ = _dataset(project_id, name, "entity.read")
    row = services.get_entity(db.session(), dataset, uuid)
    return jsonify([version_json(v) for v in services.versions(db.session(), row.entity)])


# ---- OData -------------------------------------------------------------------------------------


def _service_url(project_id: int, name: str) -> str:
    return f"{base_url()}/v1/projects/{project_id}/datasets/{quoted(name)}.svc"


def _odata(body: dict[str, Any]) -> Response:
    response = Response(
        json.dumps(body, ensure_ascii=False),
        content_type="application/json; odata.metadata=minimal",
    )
    response.headers["OData-Version"] = "4.0"
    return response


@bp.get(DATASET + ".svc")
@documented(content="application/json")
def entities_service(project_id: int, name: str):
    """Return the entity list's OData service document (one entity set: Entities)."""
    _dataset(project_id, name, "entity.list")
    return _odata(
        {
            "@odata.context": f"{_service_url(project_id, name)}/$metadata",
            "value": [{"name": "Entities", "kind": "EntitySet", "url": "Entities"}],
        }
    )


@bp.get(DATASET + ".svc/$metadata")
@documented(content="application/xml")
def entities_metadata(project_id: int, name: str):
    """Return the EDMX document of the entity list's OData service."""
    dataset, _ = _dataset(project_id, name, "entity.list")
    base = f"{FQDN_ROOT}.{sanitize(dataset.name)}"
    props = "".join(
        f'<Property Name="{services.odata_name(p.name)}" Type="Edm.String"/>'
        for p in services.properties(db.session(), dataset)
    )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">'
        "<edmx:DataServices>"
        '<Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" '
        'Namespace="org.opendatakit.entity"><ComplexType Name="metadata">'
        '<Property Name="createdAt" Type="Edm.DateTimeOffset"/>'
        '<Property Name="creatorId" Type="Edm.String"/>'
        '<Property Name="creatorName" Type="Edm.String"/>'
        '<Property Name="updates" Type="Edm.Int64"/>'
        '<Property Name="updatedAt" Type="Edm.DateTimeOffset"/>'
        '<Property Name="version" Type="Edm.Int64"/>'
        '<Property Name="conflict" Type="Edm.String"/>'
        "</ComplexType></Schema>"
        f'<Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="{base}">'
        '<EntityType Name="Entities"><Key><PropertyRef Name="__id"/></Key>'
        '<Property Name="__id" Type="Edm.String"/>'
        '<Property Name="__system" Type="org.opendatakit.entity.metadata"/>'
        f'<Property Name="label" Type="Edm.String"/>{props}</EntityType>'
        f'<EntityContainer Name="{sanitize(dataset.name)}">'
        f'<EntitySet Name="Entities" EntityType="{base}.Entities"/>'
        "</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>"
    )
    response = Response(xml, content_type="application/xml")
    response.headers["OData-Version"] = "4.0"
    return response


def _entity_row(row: services.EntityRow, props: list[DatasetProperty]) -> dict[str, Any]:
    entity, version = row.entity, row.version
    data = version.data or {}
    body: dict[str, Any] = {
        "__id": entity.uuid,
        "label": version.label,
        "__system": {
            "createdAt": iso(entity.created_at),
            "creatorId": str(entity.creator_id) if entity.creator_id else None,
            "creatorName": row.creator_name,
            "updates": row.versions - 1,
            "updatedAt": iso(entity.updated_at),
            "version": version.version,
            "conflict": entity.conflict,
        },
    }
    for prop in props:
        body[services.odata_name(prop.name)] = data.get(prop.name)
    return body


def _selected(row: dict[str, Any], select: str | None, props: list[DatasetProperty]) -> dict:
    if not select or select.strip() == "*":
        return row
    known = {"__id", "label", "__system"} | {services.odata_name(p.name) for p in props}
    keep = {"__id"}
    system: set[str] = set()
    for item in (s.strip() for s in select.split(",")):
        if item.startswith("__system/"):
            system.add(item[len("__system/") :])
        elif item in known:
            keep.add(item)
        elif item:
            raise PropertyNotFound(property=item)
    out = {k: v for k, v in row.items() if k in keep}
    if "__system" not in keep and system:
        out["__system"] = {k: v for k, v in row["__system"].items() if k in system}
    return out


def _token(entity_id: int) -> str:
    return paging.wrap({"o": "entities", "id": entity_id})


def _read_token(text: str) -> int:
    return paging.unwrap(text, "entities", "id")["id"]


def _filter() -> tuple[Any, bool | None]:
    """Return the ``$filter``'s SQL condition (None without one) and which entities it reads.

    As Central, deleted entities are left out unless the filter names ``__system/deletedAt``
    (then the filter alone decides).
    """
    text = (request.args.get("$filter") or "").strip()
    if not text:
        return None, False
    dialect = db.session().get_bind().dialect.name
    parsed = odata_filter.parse(text, FILTER_FIELDS, dialect)
    return parsed.condition, None if DELETED_AT in parsed.fields else False


@bp.get(DATASET + ".svc/Entities")
@documented(
    content="application/json",
    query={
        "$top": "integer",
        "$skip": "integer",
        "$skiptoken": "string",
        "$count": "boolean",
        "$filter": "string",
        "$select": "string",
    },
)
def entities_table(project_id: int, name: str):
    """Return a page of the entity list as OData rows: __id, label, __system, properties."""
    dataset, _ = _dataset(project_id, name, "entity.list")
    condition, deleted = _filter()
    props = services.properties(db.session(), dataset)
    size = min(query_int("$top", DEFAULT_PAGE) or 0, MAX_PAGE)
    skip = query_int("$skip", 0) or 0
    token = request.args.get("$skiptoken")
    if token is not None and skip:
        raise errors.UnexpectedValue(
            field="$skip", reason=gettext("$skip cannot be used with $skiptoken")
        )
    after = _read_token(token) if token is not None else None
    rows = services.entities(
        db.session(),
        dataset,
        deleted=deleted,
        condition=condition,
        after_id=after,
        limit=size + 1,
        offset=skip,
    )
    more = len(rows) > size
    rows = rows[:size]
    select = request.args.get("$select")
    body: dict[str, Any] = {
        "@odata.context": f"{_service_url(project_id, name)}/$metadata#Entities",
        "value": [_selected(_entity_row(r, props), select, props) for r in rows],
    }
    if more and rows:
        params = {k: v for k, v in request.args.items() if k not in ("$skip", "$skiptoken")}
        params["$skiptoken"] = _token(rows[-1].entity.id)
        body["@odata.nextLink"] = f"{base_url()}{request.path}?{urlencode(params)}"
    if query_bool("$count", False):
        body["@odata.count"] = services.count_entities(
            db.session(), dataset, deleted=deleted, condition=condition
        )
    return _odata(body)
