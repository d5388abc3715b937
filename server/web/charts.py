"""Simple charts drawn on the server as SVG geometry: no script, no outside network.

The templates turn these shapes into ``<svg>`` elements styled by the console's stylesheet
(colours through CSS classes, never inline styles, which the Content-Security-Policy forbids).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from server.web import security

# ---- columns over time -----------------------------------------------------------------------

MAX_DAYS = 92  # beyond three months, records are counted per week
MIN_SLOTS = 14  # a chart of one or two days keeps narrow columns


@dataclass(frozen=True)
class Column:
    """One column of a time chart."""

    x: float
    y: float
    width: float
    height: float
    start: dt.date
    count: int


@dataclass
class TimeChart:
    """Columns per day (or week), with the box they are drawn in."""

    width: float
    height: float
    columns: list[Column]
    maximum: int
    weekly: bool
    first: dt.date | None = None
    last: dt.date | None = None


def time_chart(counts: list[tuple[dt.date, int]], *, height: float = 120) -> TimeChart:
    """Return a column per day from the first to the last day (empty days included)."""
    if not counts:
        return TimeChart(0, height, [], 0, False)
    by_day = dict(counts)
    first, last = counts[0][0], counts[-1][0]
    weekly = (last - first).days + 1 > MAX_DAYS
    if weekly:
        first = first - dt.timedelta(days=first.weekday())
        step = dt.timedelta(days=7)
    else:
        step = dt.timedelta(days=1)
    buckets: list[tuple[dt.date, int]] = []
    day = first
    while day <= last:
        span = [day + dt.timedelta(days=i) for i in range(step.days)]
        buckets.append((day, sum(by_day.get(d, 0) for d in span)))
        day += step
    maximum = max(n for _, n in buckets) or 1
    width = 10.0
    columns = []
    for index, (start, count) in enumerate(buckets):
        bar = height * count / maximum
        columns.append(Column(index * width + 1, height - bar, width - 2, bar, start, count))
    slots = max(len(buckets), MIN_SLOTS)
    return TimeChart(slots * width, height, columns, maximum, weekly, first, last)


# ---- horizontal bars -------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One labelled row of a bar list: its count, its length (0-100) and share of the total."""

    label: str
    count: int
    length: float
    share: float
    key: str = ""


def bars(
    items: list[tuple[str, int]],
    *,
    total: int | None = None,
    keys: list[str] | None = None,
    largest: int | None = None,
) -> list[Bar]:
    """Return bars whose lengths are relative to the largest count (of a longer list, if given).

    Shares are of ``total`` when given, else of the items' sum.
    """
    largest = largest or max((n for _, n in items), default=0) or 1
    whole = total if total else (sum(n for _, n in items) or 1)
    return [
        Bar(
            label,
            n,
            round(100 * n / largest, 2),
            round(100 * n / whole, 1),
            (keys or [""] * len(items))[i],
        )
        for i, (label, n) in enumerate(items)
    ]


# ---- a map of points -------------------------------------------------------------------------

TILE = 256
MAX_ZOOM = 16


@dataclass(frozen=True)
class MapPoint:
    """A point placed on the map, with the record it links to."""

    x: float
    y: float
    instance_id: str
    name: str | None


@dataclass(frozen=True)
class Tile:
    """A background tile image placed on the map."""

    x: float
    y: float
    url: str


@dataclass
class Map:
    """Points projected (Web Mercator) into a box, and the tiles under them if any."""

    width: int
    height: int
    points: list[MapPoint] = field(default_factory=list)
    tiles: list[Tile] = field(default_factory=list)
    zoom: int = 0
    attribution: str | None = None


def _world(latitude: float, longitude: float) -> tuple[float, float]:
    """Return Web Mercator coordinates in [0, 1) x [0, 1)."""
    latitude = max(min(latitude, 85.05), -85.05)
    x = (longitude + 180) / 360
    sin = math.sin(math.radians(latitude))
    y = 0.5 - math.log((1 + sin) / (1 - sin)) / (4 * math.pi)
    return x, y


def point_map(
    points: list[tuple[float, float, str, str | None]],
    *,
    width: int = 640,
    height: int = 400,
    tile_url: str | None = None,
) -> Map:
    """Fit points into a box at the largest zoom that shows them all, with some margin."""
    result = Map(width, height)
    if not points:
        return result
    world = [(*_world(lat, lon), iid, name) for lat, lon, iid, name in points]
    xs = [p[0] for p in world]
    ys = [p[1] for p in world]
    span_x, span_y = max(xs) - min(xs), max(ys) - min(ys)
    margin = 0.8  # the points fill at most 80 % of the box
    zoom = MAX_ZOOM
    while zoom > 0 and (
        span_x * TILE * 2**zoom > width * margin or span_y * TILE * 2**zoom > height * margin
    ):
        zoom -= 1
    scale = TILE * 2**zoom
    centre_x = (max(xs) + min(xs)) / 2 * scale
    centre_y = (max(ys) + min(ys)) / 2 * scale
    left, top = centre_x - width / 2, centre_y - height / 2
    result.zoom = zoom
    result.points = [
        MapPoint(round(x * scale - left, 1), round(y * scale - top, 1), iid, name)
        for x, y, iid, name in world
    ]
    if tile_url and security.tile_origin(tile_url):
        count = 2**zoom
        for tile_y in range(int(top // TILE), int((top + height) // TILE) + 1):
            if not 0 <= tile_y < count:
                continue
            for tile_x in range(int(left // TILE), int((left + width) // TILE) + 1):
                url = (
                    tile_url.replace("{z}", str(zoom))
                    .replace("{x}", str(tile_x % count))
                    .replace("{y}", str(tile_y))
                    .replace("{s}", "abc"[(tile_x + tile_y) % 3])
                )
                result.tiles.append(Tile(tile_x * TILE - left, tile_y * TILE - top, url))
    return result
