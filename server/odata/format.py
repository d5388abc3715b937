"""OData documents for a form's records, in ODK Central's shapes (``lib/formats/odata.js``).

Pure functions from the form's merged layout (:func:`server.exports.services.load_layout`, the
same columns exports use) and records' parsed documents to:

* the service document (``Submissions`` and one entity set per repeat,
  ``Submissions.<group>.<repeat>``);
* the EDMX ``$metadata``: groups are ComplexTypes, repeats EntityTypes joined to their parent
  by ``__<parent>-id``, types mapped as Central maps them;
* the rows: ``__id`` (the instanceID, or for a repeat row a stable hash of its position),
  ``__system`` (submission date, submitter, review state...), every field of the table (null
  when not answered), groups as nested objects, repeats as ``<name>@odata.navigationLink``
  (and their rows inline with ``$expand=*``), geopoints as GeoJSON (WKT with ``$wkt=true``).

Values are typed from the form: integers and decimals as JSON numbers, booleans as JSON
booleans, dates and times as the text ODK wrote (a ``+07`` offset becomes ``+07:00``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from server import errors
from server.exports.layout import FieldInfo, FormLayout
from server.exports.values import DECIMAL, INTEGER

FQDN_ROOT = "org.opendatakit.user"
EDM_TYPES = {
    "int": "Edm.Int64",
    "decimal": "Edm.Decimal",
    "boolean": "Edm.Boolean",
    "geopoint": "Edm.GeographyPoint",
    "geotrace": "Edm.GeographyLineString",
    "geoshape": "Edm.GeographyPolygon",
    "date": "Edm.Date",
    "dateTime": "Edm.DateTimeOffset",
}
SYSTEM_FIELDS = (
    "submissionDate",
    "updatedAt",
    "submitterId",
    "submitterName",
    "attachmentsPresent",
    "attachmentsExpected",
    "status",
    "reviewState",
    "deviceId",
    "edits",
    "formVersion",
    "deletedAt",
)


def sanitize(name: str) -> str:
    """Make an XML name a valid OData identifier, as Central does."""
    name = re.sub(r"^([^a-zA-Z_])", r"_\1", name)
    return re.sub(r"[^a-zA-Z0-9_]+", "_", name)


# ---- the form as a tree ------------------------------------------------------------------------


@dataclass
class Node:
    """A field of the layout with its children (for groups and repeats)."""

    field: FieldInfo
    children: list[Node] = field(default_factory=list)

    @property
    def name(self) -> str:
        return sanitize(self.field.name)

    @property
    def kind(self) -> str:
        return self.field.kind


def tree(layout: FormLayout, *, include_deleted: bool = False) -> list[Node]:
    """Return the form's top-level nodes, each with its children, in form order."""
    nodes: dict[str, Node] = {}
    roots: list[Node] = []
    root_path = "/" + layout.root
    for info in layout.fields:
        if info.deleted and not include_deleted and info.kind == "field":
            continue
        node = Node(info)
        nodes[info.path] = node
        parent = info.path.rsplit("/", 1)[0]
        if parent == root_path:
            roots.append(node)
        elif parent in nodes:
            nodes[parent].children.append(node)
    return roots


@dataclass(frozen=True)
class Table:
    """One entity set: the records, or one repeat's rows."""

    name: str  # "Submissions" or "Submissions.group.repeat"
    steps: tuple[Node, ...] = ()  # groups and repeats from the root down to the repeat

    @property
    def is_root(self) -> bool:
        return not self.steps

    @property
    def repeat(self) -> Node | None:
        return self.steps[-1] if self.steps else None

    @property
    def columns(self) -> list[Node]:
        return self.steps[-1].children if self.steps else []

    @property
    def parent_key(self) -> str:
        """Name of the key joining a repeat's rows to their parent's (``__Submissions-id``)."""
        outer = [i for i, step in enumerate(self.steps[:-1]) if step.kind == "repeat"]
        names = ["Submissions"]
        if outer:
            names += [step.name for step in self.steps[: outer[-1] + 1]]
        return "__" + "-".join(names) + "-id"


def tables(roots: list[Node]) -> list[Table]:
    """Return every entity set: the records, then each repeat (nested ones included)."""
    found = [Table("Submissions")]

    def walk(nodes: list[Node], steps: tuple[Node, ...]) -> None:
        for node in nodes:
            if node.kind == "repeat":
                path = (*steps, node)
                found.append(Table("Submissions." + ".".join(s.name for s in path), path))
                walk(node.children, path)
            elif node.kind == "group":
                walk(node.children, (*steps, node))

    walk(roots, ())
    return found


def find_table(roots: list[Node], name: str) -> Table:
    """Return the entity set called ``name``; 404 when the form has none."""
    for table in tables(roots):
        if table.name == name:
            return table
    raise errors.NotFound()


# ---- service document and $metadata -----------------------------------------------------------


def service_document(roots: list[Node], service_url: str) -> dict[str, Any]:
    """Return the service document listing every entity set."""
    return {
        "@odata.context": f"{service_url}/$metadata",
        "value": [{"name": t.name, "kind": "EntitySet", "url": t.name} for t in tables(roots)],
    }


def edmx(xml_form_id: str, roots: list[Node]) -> str:
    """Return the EDMX metadata document describing every entity set."""
    base = f"{FQDN_ROOT}.{sanitize(xml_form_id)}"
    entity_types: list[tuple[str, list[str], bool]] = []
    complex_types: list[tuple[str, list[str]]] = []

    def properties(nodes: list[Node]) -> list[str]:
        out = []
        for node in nodes:
            parts = ".".join(sanitize(p) for p in node.field.parts)
            if node.kind == "group":
                out.append(_property(node.name, f"{base}.{parts}"))
                complex_types.append((parts, properties(node.children)))
            elif node.kind == "repeat":
                out.append(
                    f"<NavigationProperty Name={quoteattr(node.name)} "
                    f"Type={quoteattr(f'Collection({base}.Submissions.{parts})')}/>"
                )
            else:
                out.append(_property(node.name, EDM_TYPES.get(node.field.type, "Edm.String")))
        return out

    for table in tables(roots):
        props = [_property("__id", "Edm.String")]
        if table.is_root:
            props.append(_property("__system", "org.opendatakit.submission.metadata"))
            props += properties(roots)
        else:
            props.append(_property(table.parent_key, "Edm.String"))
            props += properties(table.columns)
        entity_types.append((table.name, props, table.is_root))

    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">',
        "<edmx:DataServices>",
        '<Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" '
        'Namespace="org.opendatakit.submission">',
        '<ComplexType Name="metadata">',
        _property("submissionDate", "Edm.DateTimeOffset"),
        _property("updatedAt", "Edm.DateTimeOffset"),
        _property("submitterId", "Edm.String"),
        _property("submitterName", "Edm.String"),
        _property("attachmentsPresent", "Edm.Int64"),
        _property("attachmentsExpected", "Edm.Int64"),
        _property("status", "org.opendatakit.submission.Status"),
        _property("reviewState", "org.opendatakit.submission.ReviewState"),
        _property("deviceId", "Edm.String"),
        _property("edits", "Edm.Int64"),
        _property("formVersion", "Edm.String"),
        _property("deletedAt", "Edm.DateTimeOffset"),
        "</ComplexType>",
        '<EnumType Name="Status"><Member Name="notDecrypted"/>'
        '<Member Name="missingEncryptedFormData"/></EnumType>',
        '<EnumType Name="ReviewState"><Member Name="hasIssues"/><Member Name="edited"/>'
        '<Member Name="rejected"/><Member Name="approved"/></EnumType>',
        "</Schema>",
        f'<Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace={quoteattr(base)}>',
    ]
    for name, props, _primary in entity_types:
        lines.append(f"<EntityType Name={quoteattr(name)}>")
        lines.append('<Key><PropertyRef Name="__id"/></Key>')
        lines += props
        lines.append("</EntityType>")
    for name, props in complex_types:
        lines.append(f"<ComplexType Name={quoteattr(name)}>")
        lines += props
        lines.append("</ComplexType>")
    lines.append(f"<EntityContainer Name={quoteattr(sanitize(xml_form_id))}>")
    for name, _props, primary in entity_types:
        entity_type = quoteattr(f"{base}.{name}")
        lines.append(f"<EntitySet Name={quoteattr(name)} EntityType={entity_type}>")
        if primary:
            lines += _capabilities([n.name for n in roots])
        lines.append("</EntitySet>")
    lines += ["</EntityContainer>", "</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(lines)


def _property(name: str, type_: str) -> str:
    return f"<Property Name={quoteattr(name)} Type={quoteattr(type_)}/>"


def _capabilities(non_filterable: Iterable[str]) -> list[str]:
    paths = "".join(f"<PropertyPath>{escape(p)}</PropertyPath>" for p in non_filterable)
    capability = "Org.OData.Capabilities.V1"
    return [
        f'<Annotation Term="{capability}.ConformanceLevel" '
        f'EnumMember="{capability}.ConformanceLevelType/Minimal"/>',
        f'<Annotation Term="{capability}.BatchSupported" Bool="false"/>',
        f'<Annotation Term="{capability}.CountRestrictions"><Record>'
        '<PropertyValue Property="Countable" Bool="true"/></Record></Annotation>',
        f'<Annotation Term="{capability}.FilterRestrictions"><Record>'
        '<PropertyValue Property="Filterable" Bool="true"/>'
        '<PropertyValue Property="RequiresFilter" Bool="false"/>'
        f'<PropertyValue Property="NonFilterableProperties"><Collection>{paths}'
        "</Collection></PropertyValue></Record></Annotation>",
        f'<Annotation Term="{capability}.SortRestrictions"><Record>'
        '<PropertyValue Property="Sortable" Bool="true"/></Record></Annotation>',
        f'<Annotation Term="{capability}.ExpandRestrictions"><Record>'
        '<PropertyValue Property="Expandable" Bool="true"/></Record></Annotation>',
    ]


# ---- $select -----------------------------------------------------------------------------------


@dataclass
class Selection:
    """What ``$select`` keeps: field paths, system fields, the parent key."""

    paths: set[str] = field(default_factory=set)  # layout paths of kept nodes (and ancestors)
    system: set[str] | None = None  # None: the whole __system; empty: none
    parent_key: bool = False


def parse_select(text: str | None, table: Table, roots: list[Node]) -> Selection | None:
    """Read ``$select``; None keeps everything. Unknown properties are 400.23."""
    if text is None or text.strip() in ("", "*"):
        return None
    selection = Selection(system=set())
    columns = roots if table.is_root else table.columns
    for raw in text.split(","):
        item = raw.strip()
        if not item or item == "__id":
            continue
        if item == table.parent_key and not table.is_root:
            selection.parent_key = True
            continue
        if table.is_root and item == "__system":
            selection.system = None  # the whole object
            continue
        if table.is_root and item.startswith("__system/") and item[9:] in SYSTEM_FIELDS:
            if selection.system is not None:
                selection.system.add(item[9:])
            continue
        node = _find(columns, item.split("/"))
        if node is None:
            raise errors.PropertyNotFound(property=item)
        selection.paths |= {n.field.path for n in _walk([node])}
        parent = node.field.path.rsplit("/", 1)[0]
        while parent.count("/") > 1:
            selection.paths.add(parent)
            parent = parent.rsplit("/", 1)[0]
    return selection


def _find(nodes: list[Node], names: list[str]) -> Node | None:
    for node in nodes:
        if node.name == names[0]:
            if len(names) == 1:
                return node
            if node.kind == "repeat":
                raise errors.UnsupportedSelect(property="/".join(names))
            return _find(node.children, names[1:])
    return None


def _walk(nodes: list[Node]) -> Iterator[Node]:
    for node in nodes:
        yield node
        if node.kind != "repeat":
            yield from _walk(node.children)


# ---- rows --------------------------------------------------------------------------------------


@dataclass
class Record:
    """What a row needs to know of a record besides its document."""

    instance_id: str
    document: dict[str, Any] | None
    system: dict[str, Any]


@dataclass
class RowOptions:
    wkt: bool = False
    expand: bool = False
    selection: Selection | None = None


def _hash(parts: list[str]) -> str:
    return hashlib.sha1("%%".join(parts).encode(), usedforsecurity=False).hexdigest()


def _number(value: str, kind: str) -> Any:
    value = value.strip()
    if kind == "int":
        return int(value) if INTEGER.fullmatch(value) else None
    return float(value) if DECIMAL.fullmatch(value) else None


def _point(text: str) -> list[float] | None:
    parts = text.split()
    if len(parts) < 2:
        return None
    try:
        numbers = [float(p) for p in parts[:4]]
    except ValueError:
        return None
    return numbers


def _geo(kind: str, text: str, wkt: bool) -> Any:
    if kind == "geopoint":
        point = _point(text)
        if point is None:
            return None
        coordinates = [point[1], point[0], *point[2:3]]
        if wkt:
            return "POINT (" + " ".join(_fmt(c) for c in coordinates) + ")"
        value: dict[str, Any] = {"type": "Point", "coordinates": coordinates}
        if len(point) > 3:
            value["properties"] = {"accuracy": point[3]}
        return value
    points = [p for p in (_point(s) for s in re.split(r";\s?", text.strip())) if p is not None]
    if not points:
        return None
    coordinates = [[p[1], p[0], *p[2:3]] for p in points]
    if wkt:
        body = ",".join(" ".join(_fmt(c) for c in point) for point in coordinates)
        return f"LINESTRING ({body})" if kind == "geotrace" else f"POLYGON (({body}))"
    shape: dict[str, Any] = (
        {"type": "LineString", "coordinates": coordinates}
        if kind == "geotrace"
        else {"type": "Polygon", "coordinates": [coordinates]}
    )
    accuracies = [p[3] if len(p) > 3 else None for p in points]
    if any(a is not None for a in accuracies):
        shape["properties"] = {"accuracies": accuracies}
    return shape


def _fmt(number: float) -> str:
    return str(int(number)) if number.is_integer() else repr(number)


def convert(kind: str, value: Any, *, wkt: bool = False) -> Any:
    """Type one answer (text as written) for OData; null when empty or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    if kind in ("int", "decimal"):
        return _number(value, kind)
    if kind in ("geopoint", "geotrace", "geoshape"):
        return _geo(kind, value, wkt)
    if kind == "boolean":
        lowered = value.strip().lower()
        return True if lowered in ("true", "1") else False if lowered in ("false", "0") else None
    if kind == "dateTime":
        trimmed = value.strip()
        return trimmed + ":00" if re.search(r"[+-]\d\d$", trimmed) else trimmed
    if kind in ("select_multiple", "rank"):
        return " ".join(value.split())
    return value


class _Builder:
    """Builds the rows of one table from records, with Central's ids and links."""

    def __init__(self, table: Table, roots: list[Node], options: RowOptions) -> None:
        self.table = table
        self.roots = roots
        self.options = options
        self.kept = options.selection.paths if options.selection is not None else None

    def _frame(
        self, nodes: list[Node], data: Any, record: Record, trail: list[str], link: list[str]
    ) -> dict[str, Any]:
        data = data if isinstance(data, dict) else {}
        out: dict[str, Any] = {}
        for node in nodes:
            if self.kept is not None and node.field.path not in self.kept:
                continue
            raw_name = node.field.name
            if node.kind == "group":
                out[node.name] = self._frame(
                    node.children,
                    data.get(raw_name),
                    record,
                    [*trail, f"{raw_name}#"],
                    [*link, node.name],
                )
            elif node.kind == "repeat":
                out[f"{node.name}@odata.navigationLink"] = "/".join([*link, node.name])
                if self.options.expand:
                    out[node.name] = [
                        {"__id": row_id, **row}
                        for row_id, row, _ in self._instances(node, data, record, trail, link)
                    ]
            else:
                out[node.name] = convert(node.field.type, data.get(raw_name), wkt=self.options.wkt)
        return out

    def _instances(
        self, node: Node, data: dict[str, Any], record: Record, trail: list[str], link: list[str]
    ) -> Iterator[tuple[str, dict[str, Any], tuple[list[str], list[str]]]]:
        """Yield (row id, row, (trail, link) below it) for each instance of a repeat."""
        items = data.get(node.field.name)
        if isinstance(items, dict):  # a group that became a repeat in a later version
            items = [items]
        if not isinstance(items, list):
            return
        for position, item in enumerate(items, 1):
            below = [*trail, f"{node.field.name}#{position}"]
            row_id = _hash(below)
            below_link = [*link, f"{node.name}('{row_id}')"]
            yield (
                row_id,
                self._frame(node.children, item, record, below, below_link),
                (
                    below,
                    below_link,
                ),
            )

    def root_row(self, record: Record) -> dict[str, Any]:
        row: dict[str, Any] = {"__id": record.instance_id}
        selection = self.options.selection
        if selection is None or selection.system is None:
            row["__system"] = record.system
        elif selection.system:
            row["__system"] = {k: v for k, v in record.system.items() if k in selection.system}
        start = [f"Submissions('{record.instance_id}')"]
        row.update(self._frame(self.roots, record.document, record, [], start))
        return row

    def repeat_rows(self, record: Record) -> Iterator[dict[str, Any]]:
        """Yield the rows of the table's repeat in one record, in document order."""
        trail = [f"Submissions#{record.instance_id}"]
        link = [f"Submissions('{record.instance_id}')"]
        yield from self._descend(
            list(self.table.steps), record.document, record, trail, link, record.instance_id
        )

    def _descend(
        self,
        steps: list[Node],
        data: Any,
        record: Record,
        trail: list[str],
        link: list[str],
        parent_id: str,
    ) -> Iterator[dict[str, Any]]:
        if not isinstance(data, dict):
            return
        step, rest = steps[0], steps[1:]
        if step.kind == "group":
            yield from self._descend(
                rest,
                data.get(step.field.name),
                record,
                [*trail, f"{step.field.name}#"],
                [*link, step.name],
                parent_id,
            )
            return
        for row_id, row, (below, below_link) in self._instances(step, data, record, trail, link):
            if rest:
                items = data.get(step.field.name)
                items = [items] if isinstance(items, dict) else items
                position = int(below[-1].rsplit("#", 1)[1])
                yield from self._descend(
                    rest, items[position - 1], record, below, below_link, row_id
                )
                continue
            selection = self.options.selection
            out = {"__id": row_id, **row}
            if selection is None or selection.parent_key:
                out[self.table.parent_key] = parent_id
            yield out


def rows(
    table: Table, roots: list[Node], record: Record, options: RowOptions
) -> list[dict[str, Any]]:
    """Return the rows ``record`` contributes to ``table`` (one for the records' table)."""
    builder = _Builder(table, roots, options)
    if table.is_root:
        return [builder.root_row(record)]
    if record.document is None:
        return []  # an encrypted record: its repeats are unknown
    return list(builder.repeat_rows(record))
