"""GeoJSON of a form's places: every geopoint, geotrace and geoshape answer, streamed.

One Feature per answer (a record with a point in the main form and one per household member
gives several): geopoints are Points ``[longitude, latitude, altitude]`` (GeoJSON puts the
longitude first) with their accuracy in the properties, geotraces LineStrings and geoshapes
Polygons (closed when the tablet did not repeat the first point). The properties say where a
place comes from: the row's ``KEY`` (a repeat row's KEY for answers in repeats), the record's
``instanceID``, the field's path, and the record's name, submission date, submitter and review
state. Answers that are not valid coordinates are left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from server.exports import layout as L
from server.exports import values
from server.exports.context import ExportContext
from server.exports.streams import CHUNK_BYTES, ChunkBuffer

HEAD = b'{"type":"FeatureCollection","features":[\n'
TAIL = b"\n]}\n"


def _position(text: str) -> list[float] | None:
    parts = text.split()
    if len(parts) < 2:
        return None
    try:
        numbers = [float(p) for p in parts[:3]]
    except ValueError:
        return None
    latitude, longitude = numbers[0], numbers[1]
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    position = [longitude, latitude]
    if len(numbers) == 3:
        position.append(numbers[2])
    return position


def geometry(field_type: str, text: str) -> tuple[dict[str, Any], float | None] | None:
    """Return the GeoJSON geometry of an ODK geo answer and its accuracy, None if invalid."""
    if not text:
        return None
    if field_type == "geopoint":
        position = _position(text)
        if position is None:
            return None
        parts = text.split()
        accuracy = None
        if len(parts) >= 4:
            try:
                accuracy = float(parts[3])
            except ValueError:
                accuracy = None
        return {"type": "Point", "coordinates": position}, accuracy
    points = [_position(p) for p in text.split(";") if p.strip()]
    if not points or any(p is None for p in points):
        return None
    if field_type == "geotrace":
        if len(points) < 2:
            return None
        return {"type": "LineString", "coordinates": points}, None
    if points[0][:2] != points[-1][:2]:  # type: ignore[index]
        points.append(points[0])
    if len(points) < 4:
        return None
    return {"type": "Polygon", "coordinates": [points]}, None


def geojson_chunks(ctx: ExportContext) -> Iterator[bytes]:
    """Yield a FeatureCollection of every geo answer of the chosen records."""
    plan = ctx.plan
    hide = ctx.options.pii != "plain"
    geo: dict[int, list[tuple[int, L.FieldInfo]]] = {}
    for table in plan.tables():
        geo[id(table)] = [
            (table.leaf_index(leaf.path), leaf)
            for leaf in table.leaves
            if leaf.type in values.GEO_TYPES and not (leaf.pii and hide)
        ]
    name_hidden = hide and plan.layout.personal.instance_name
    pseudonymise = ctx.pseudonymise
    buffer = ChunkBuffer()
    buffer.write(HEAD)
    yield buffer.take()
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    first = True
    main = plan.main
    main_geo = geo[id(main)]
    for row in ctx.records():
        ctx.stats.rows_written += 1
        instance_id = row[L.M_INSTANCE_ID]
        name = row[L.M_INSTANCE_NAME] or ""
        if name_hidden:
            name = pseudonymise(name) if pseudonymise is not None else ""
        common = {
            "instanceID": instance_id,
            "instanceName": name,
            "SubmissionDate": row[L.M_DATE],
            "SubmitterID": _int(row[L.M_SUBMITTER_ID]),
            "SubmitterName": row[L.M_SUBMITTER_NAME] or "",
            "ReviewState": row[L.M_REVIEW] or None,
        }
        rows: Iterator[tuple[L.TablePlan, list[Any]]] = iter(((main, row),))
        if main.children:
            rows = _chain((main, row), ctx.repeat_rows(row))
        for table, raw in rows:
            fields = main_geo if table is main else geo[id(table)]
            if not fields:
                continue
            key = raw[L.M_INSTANCE_ID] if table is main else raw[L.R_KEY]
            for index, leaf in fields:
                found = geometry(leaf.type, raw[index])
                if found is None:
                    continue
                shape, accuracy = found
                properties = {"KEY": key, "field": leaf.path, **common}
                if accuracy is not None:
                    properties["accuracy"] = accuracy
                feature = {"type": "Feature", "geometry": shape, "properties": properties}
                if not first:
                    buffer.write(b",\n")
                first = False
                buffer.write(dumps(feature).encode())
        if buffer.size >= CHUNK_BYTES:
            ctx.stats.bytes_out = buffer.total
            yield buffer.take()
    buffer.write(TAIL)
    ctx.stats.bytes_out = buffer.total
    yield buffer.take()


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
