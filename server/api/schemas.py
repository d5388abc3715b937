"""marshmallow schemas at the API's edge: what requests may carry and what answers carry.

Input schemas read a JSON body (:func:`load`): anything wrong becomes Central's 400 with the
field named (400.2 when missing, 400.8 otherwise), never a 500. Output schemas fix the keys of
each answer: every key ODK Central's object has is present, null when unknown, because pyodk's
pydantic models refuse an object with a key missing (``dump_default=None``). Routes declare
their schemas with :func:`documented`, from which :mod:`server.api.openapi` writes the OpenAPI
document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask_babel import lazy_gettext
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from server import errors
from server.api.render import iso

F = TypeVar("F", bound=Callable[..., Any])

# endpoint function's qualified name -> what OpenAPI says of it
ROUTE_DOCS: dict[str, dict[str, Any]] = {}


def documented(
    *,
    body: type[Schema] | None = None,
    response: type[Schema] | None = None,
    many: bool = False,
    content: str | None = None,
    body_content: str | None = None,
    query: dict[str, str] | None = None,
) -> Callable[[F], F]:
    """Record a route's request and response shapes for the OpenAPI document."""

    def mark(view: F) -> F:
        ROUTE_DOCS[f"{view.__module__}.{view.__name__}"] = {
            "body": body,
            "response": response,
            "many": many,
            "content": content,
            "body_content": body_content,
            "query": query or {},
        }
        return view

    return mark


# ---- reading input ---------------------------------------------------------------------------

_REQUIRED = lazy_gettext("Missing data for required field.")


class Input(Schema):
    """Base of input schemas: unknown keys are ignored, as Central does."""

    class Meta:
        unknown = EXCLUDE


def load(schema: Schema, data: Any) -> dict[str, Any]:
    """Validate ``data`` with ``schema``; raise the Central problem naming the first bad field."""
    if not isinstance(data, dict):
        raise errors.Unparseable(format="JSON", reason="expected a JSON object")
    try:
        return schema.load(data)
    except ValidationError as exc:
        field, reason = _first(exc.normalized_messages())
        if str(reason) == str(_REQUIRED) or reason == "Missing data for required field.":
            raise errors.MissingParameter(field=field) from None
        raise errors.UnexpectedValue(field=field, reason=str(reason)) from None


def _first(messages: Any, prefix: str = "") -> tuple[str, Any]:
    """Return (dotted field name, first message) of marshmallow's nested error messages."""
    if isinstance(messages, dict):
        key, value = next(iter(messages.items()))
        name = f"{prefix}.{key}" if prefix else str(key)
        if key == "_schema":
            name = prefix or "body"
        return _first(value, name)
    if isinstance(messages, list) and messages:
        return _first(messages[0], prefix)
    return prefix or "body", messages


def text(*, required: bool = False, allow_none: bool = False, **kwargs: Any) -> fields.String:
    """A text field whose errors read well in English and French."""
    return fields.String(
        required=required,
        allow_none=allow_none,
        error_messages={
            "required": _REQUIRED,
            "invalid": lazy_gettext("expected text"),
            "null": lazy_gettext("expected text, not null"),
        },
        **kwargs,
    )


def boolean(**kwargs: Any) -> fields.Boolean:
    """A JSON boolean (true or false only)."""
    return fields.Boolean(
        truthy={True},
        falsy={False},
        error_messages={"invalid": lazy_gettext("expected true or false"), "required": _REQUIRED},
        **kwargs,
    )


# ---- writing output --------------------------------------------------------------------------


class Timestamp(fields.Field):
    """A timestamp written as Central writes them: UTC, milliseconds, ``Z``."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value  # already rendered (nested objects built by other modules)
        return iso(value)


def out(field: type[fields.Field] | fields.Field, **kwargs: Any) -> fields.Field:
    """An output field always present in answers (null when the value is unknown)."""
    if isinstance(field, fields.Field):
        return field
    return field(dump_default=None, allow_none=True, **kwargs)


class Output(Schema):
    """Base of output schemas."""

    class Meta:
        ordered = True


class ActorOut(Output):
    id = out(fields.Integer)
    type = out(fields.String)
    displayName = out(fields.String)
    createdAt = out(Timestamp)
    updatedAt = out(Timestamp)
    deletedAt = out(Timestamp)


class SuccessOut(Output):
    success = fields.Boolean(dump_default=True)


class ProblemOut(Output):
    code = fields.Float(metadata={"description": "Central's problem code, e.g. 409.3"})
    message = fields.String()
    details = fields.Dict()


# submissions


class DroppedOut(Output):
    count = fields.Integer(
        dump_default=0, metadata={"description": "files sent for no question of the form"}
    )
    names = fields.List(
        fields.String(),
        dump_default=list,
        metadata={"description": "their names, cleaned (the first 20)"},
    )


def dropped(description: str) -> fields.Nested:
    """The files a version or a conflict did not keep (not in Central: named for this server)."""
    return fields.Nested(DroppedOut, dump_default=None, metadata={"description": description})


class SubmissionVersionOut(Output):
    instanceId = out(fields.String)
    instanceName = out(fields.String)
    submitterId = out(fields.Integer)
    deviceId = out(fields.String)
    userAgent = out(fields.String)
    createdAt = out(Timestamp)
    current = out(fields.Boolean)
    deprecatedId = out(fields.String)
    formVersion = out(fields.String)
    attachmentsPresent = out(fields.Integer)
    attachmentsExpected = out(fields.Integer)
    encrypted = out(fields.Boolean)
    droppedAttachments = dropped("files sent with this version for no question: not kept")


class SubmissionOut(Output):
    instanceId = out(fields.String)
    submitterId = out(fields.Integer)
    deviceId = out(fields.String)
    userAgent = out(fields.String)
    reviewState = out(fields.String)
    instanceName = out(fields.String)
    createdAt = out(Timestamp)
    updatedAt = out(Timestamp)
    deletedAt = out(Timestamp)
    droppedAttachments = dropped("files sent with the current version for no question: not kept")


class SubmissionExtendedOut(SubmissionOut):
    submitter = fields.Nested(ActorOut, allow_none=True, dump_default=None)
    formVersion = out(fields.String)
    attachmentsPresent = out(fields.Integer)
    attachmentsExpected = out(fields.Integer)
    edits = out(fields.Integer)
    currentVersion = fields.Nested(SubmissionVersionOut, allow_none=True, dump_default=None)


class SubmissionAttachmentOut(Output):
    name = out(fields.String)
    exists = out(fields.Boolean)


class DifferenceOut(Output):
    path = out(fields.String, metadata={"description": "e.g. /data/members[2]/age"})
    current = out(fields.Raw, metadata={"description": "in the record's current version"})
    conflicting = out(fields.Raw, metadata={"description": "in the payload sent again"})


class ConflictOut(Output):
    id = out(fields.Integer)
    instanceId = out(fields.String)
    reason = out(fields.String)
    formVersion = out(fields.String)
    submitterId = out(fields.Integer)
    deviceId = out(fields.String)
    userAgent = out(fields.String)
    createdAt = out(Timestamp)
    resolvedAt = out(Timestamp)
    resolution = out(
        fields.String, metadata={"description": "keepFirst, takeSecond or discard; null: open"}
    )
    resolvedBy = out(fields.Integer)
    versionInstanceId = out(
        fields.String, metadata={"description": "the version takeSecond made of the payload"}
    )
    attachments = fields.List(fields.String(), dump_default=list)
    droppedAttachments = dropped("files sent with the payload for no question: not kept")


class ConflictDetailOut(ConflictOut):
    encrypted = out(fields.Boolean)
    differences = fields.List(fields.Nested(DifferenceOut), dump_default=list)


class ConflictIn(Input):
    resolution = text(
        required=True,
        validate=validate.OneOf(
            ("keepFirst", "takeSecond", "discard"),
            error=lazy_gettext("expected one of keepFirst, takeSecond, discard"),
        ),
    )


class CommentOut(Output):
    body = out(fields.String)
    actorId = out(fields.Integer)
    createdAt = out(Timestamp)


class CommentExtendedOut(CommentOut):
    actor = fields.Nested(ActorOut, allow_none=True, dump_default=None)


class AuditOut(Output):
    id = out(fields.Integer)
    actorId = out(fields.Integer)
    action = out(fields.String)
    acteeId = out(fields.String, metadata={"description": "always null: actees have no UUID"})
    projectId = out(fields.Integer)
    xmlFormId = out(fields.String)
    details = out(fields.Dict)
    loggedAt = out(Timestamp)


class AuditExtendedOut(AuditOut):
    actor = fields.Nested(ActorOut, allow_none=True, dump_default=None)


class ReviewIn(Input):
    reviewState = text(
        required=True,
        validate=validate.OneOf(
            ("hasIssues", "edited", "approved", "rejected"),
            error=lazy_gettext("expected one of hasIssues, edited, approved, rejected"),
        ),
    )


class CommentIn(Input):
    body = text(
        required=True,
        validate=validate.Length(
            min=1, max=10_000, error=lazy_gettext("expected between 1 and 10000 characters")
        ),
    )


# entity lists


class PropertyOut(Output):
    name = out(fields.String)
    odataName = out(fields.String)
    publishedAt = out(Timestamp)
    forms = fields.List(fields.String(), dump_default=list)


class DatasetOut(Output):
    name = out(fields.String)
    projectId = out(fields.Integer)
    createdAt = out(Timestamp)
    approvalRequired = out(fields.Boolean)
    ownerOnly = fields.Boolean(dump_default=False)


class DatasetExtendedOut(DatasetOut):
    entities = out(fields.Integer)
    lastEntity = out(Timestamp)
    conflicts = fields.Integer(dump_default=0)


class DatasetDetailOut(DatasetOut):
    properties = fields.List(fields.Nested(PropertyOut), dump_default=list)
    sourceForms = fields.List(fields.Dict(), dump_default=list)
    linkedForms = fields.List(fields.Dict(), dump_default=list)


class EntityVersionOut(Output):
    label = out(fields.String)
    current = out(fields.Boolean)
    createdAt = out(Timestamp)
    creatorId = out(fields.Integer)
    userAgent = out(fields.String)
    version = out(fields.Integer)
    baseVersion = out(fields.Integer)
    data = out(fields.Dict)
    dataReceived = out(fields.Dict)
    conflictingProperties = out(fields.List, cls_or_instance=fields.String())
    source = out(fields.Dict)


class EntityOut(Output):
    uuid = out(fields.String)
    creatorId = out(fields.Integer)
    createdAt = out(Timestamp)
    updatedAt = out(Timestamp)
    deletedAt = out(Timestamp)
    conflict = out(fields.String)
    currentVersion = fields.Nested(EntityVersionOut)


class EntityExtendedOut(EntityOut):
    creator = fields.Nested(ActorOut, allow_none=True, dump_default=None)


class DatasetIn(Input):
    name = text(required=True)
    approvalRequired = boolean(load_default=False)


class DatasetUpdateIn(Input):
    approvalRequired = boolean(required=True)


class PropertyIn(Input):
    name = text(required=True)


class EntityIn(Input):
    uuid = text(allow_none=True, load_default=None)
    label = text(required=True)
    data = fields.Dict(
        keys=fields.String(),
        load_default=dict,
        error_messages={"invalid": lazy_gettext("expected an object of property values")},
    )


class EntitySourceIn(Input):
    name = text(required=True)
    size = fields.Raw(load_default=None)


class EntityBulkIn(Input):
    entities = fields.List(
        fields.Nested(EntityIn),
        required=True,
        validate=validate.Length(min=1, error=lazy_gettext("expected at least one entity")),
        error_messages={"required": _REQUIRED, "invalid": lazy_gettext("expected a list")},
    )
    source = fields.Nested(EntitySourceIn, required=True, error_messages={"required": _REQUIRED})


class EntityUpdateIn(Input):
    label = text(allow_none=False, load_default=None)
    data = fields.Dict(
        keys=fields.String(),
        load_default=None,
        error_messages={"invalid": lazy_gettext("expected an object of property values")},
    )


# ---- shapes of the resources served by the older modules (for the OpenAPI document) ----------


class SessionIn(Input):
    email = text(required=True)
    password = text(required=True)


class SessionOut(Output):
    createdAt = out(Timestamp)
    expiresAt = out(Timestamp)
    token = out(fields.String)
    csrf = out(fields.String)


class UserOut(ActorOut):
    email = out(fields.String)


class ProjectOut(Output):
    id = out(fields.Integer)
    name = out(fields.String)
    description = out(fields.String)
    archived = out(fields.Boolean)
    keyId = out(fields.Integer)
    createdAt = out(Timestamp)
    updatedAt = out(Timestamp)
    deletedAt = out(Timestamp)


class AppUserOut(Output):
    projectId = out(fields.Integer)
    id = out(fields.Integer)
    type = out(fields.String)
    displayName = out(fields.String)
    token = out(fields.String)
    createdAt = out(Timestamp)
    updatedAt = out(Timestamp)
    deletedAt = out(Timestamp)


class FormOut(Output):
    projectId = out(fields.Integer)
    xmlFormId = out(fields.String)
    state = out(fields.String)
    enketoId = out(fields.String)
    enketoOnceId = out(fields.String)
    name = out(fields.String)
    version = out(fields.String)
    keyId = out(fields.Integer)
    hash = out(fields.String)
    sha = out(fields.String)
    sha256 = out(fields.String)
    draftToken = out(fields.String)
    publishedAt = out(Timestamp)
    createdAt = out(Timestamp)
    updatedAt = out(Timestamp)


class FormAttachmentOut(Output):
    name = out(fields.String)
    type = out(fields.String)
    hash = out(fields.String)
    exists = out(fields.Boolean)
    blobExists = out(fields.Boolean)
    datasetExists = out(fields.Boolean)
    updatedAt = out(Timestamp)


# public links


class PublicLinkIn(Input):
    displayName = text(required=True, validate=validate.Length(min=1, max=255))
    once = boolean(load_default=False)


class PublicLinkOut(ActorOut):
    once = out(fields.Boolean)
    token = out(fields.String)
