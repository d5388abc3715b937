"""Figures about a form's records, for the console's overview page.

Counts (per day, per enumerator, review states, attachments still missing) are computed by the
database over every live record. Answers per choice and places need each record's document:
they are read from the newest :data:`SAMPLE_LIMIT` records only, so that the page stays quick
on a form with a million records (the page says when it counted a sample).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.auth.models import Actor
from server.forms.schema import FormSchema
from server.personal import Disclosure
from server.submissions.models import Submission, SubmissionVersion

SAMPLE_LIMIT = 10_000
MAX_POINTS = 5_000
# Selects whose answers are charted (a rank orders every choice: nothing to count).
CHARTED_SELECTS = ("select_one", "select_multiple")


def _live(form_id: int) -> list[sa.ColumnElement[bool]]:
    return [Submission.form_id == form_id, Submission.live()]


# Each record with its current version (the one its answers and attachments are read from).
_LIVE_CURRENT = sa.join(
    Submission,
    SubmissionVersion,
    sa.and_(
        SubmissionVersion.submission_id == Submission.id,
        SubmissionVersion.current.is_(True),
    ),
)


def per_day(db_session: Session, form_id: int) -> list[tuple[dt.date, int]]:
    """Return how many records arrived each day (UTC), oldest day first; empty days omitted."""
    if db_session.get_bind().dialect.name == "postgresql":
        day = sa.func.date(sa.func.timezone("UTC", Submission.created_at))
    else:
        day = sa.func.date(Submission.created_at)  # stored as UTC text on SQLite
    rows = db_session.execute(
        sa.select(day.label("day"), sa.func.count())
        .where(*_live(form_id))
        .group_by("day")
        .order_by("day")
    ).all()
    return [
        (value if isinstance(value, dt.date) else dt.date.fromisoformat(value), n)
        for value, n in rows
    ]


@dataclass(frozen=True)
class Submitter:
    """Someone who sent records to the form, and how many."""

    actor_id: int | None
    name: str | None
    count: int


def per_submitter(db_session: Session, form_id: int) -> list[Submitter]:
    """Return the form's enumerators (app users or people) by number of records, most first."""
    rows = db_session.execute(
        sa.select(Submission.submitter_id, Actor.display_name, sa.func.count())
        .outerjoin(Actor, Actor.id == Submission.submitter_id)
        .where(*_live(form_id))
        .group_by(Submission.submitter_id, Actor.display_name)
        .order_by(sa.func.count().desc(), Actor.display_name)
    ).all()
    return [Submitter(actor_id, name, count) for actor_id, name, count in rows]


@dataclass(frozen=True)
class Completeness:
    """Attachments announced by records that have not arrived yet."""

    records: int
    records_missing: int
    attachments_expected: int
    attachments_missing: int


def completeness(db_session: Session, form_id: int) -> Completeness:
    """Return how many records still wait for attachments, and how many files are missing."""
    missing = SubmissionVersion.attachments_expected - SubmissionVersion.attachments_present
    row = db_session.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((missing > 0, 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(SubmissionVersion.attachments_expected), 0),
            sa.func.coalesce(sa.func.sum(sa.case((missing > 0, missing), else_=0)), 0),
        )
        .select_from(_LIVE_CURRENT)
        .where(*_live(form_id))
    ).one()
    return Completeness(*(int(value or 0) for value in row))


@dataclass
class ChoiceCount:
    """How often each choice of one select question was answered."""

    path: str
    name: str
    type: str
    labels: Mapping[str, str]
    choices: list[tuple[str, Mapping[str, str], int]]  # (value, labels, count), in list order
    answered: int = 0


@dataclass(frozen=True)
class Point:
    """One geopoint answer and the record it belongs to."""

    latitude: float
    longitude: float
    instance_id: str
    name: str | None


@dataclass
class Answers:
    """Answers per choice and places, counted on the newest records."""

    sampled: int
    choices: list[ChoiceCount] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)


def _parse_point(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, str):
        return None
    parts = value.split()
    if len(parts) < 2:
        return None
    try:
        latitude, longitude = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    return latitude, longitude


def answers(
    db_session: Session,
    form_id: int,
    schema: FormSchema | Mapping[str, Any] | None,
    disclosure: Disclosure,
) -> Answers:
    """Count answers per choice of the schema's select questions, and collect its geopoints.

    ``schema`` is the field schema of the version whose questions are shown (the published
    one); records filled on other versions count for the questions they share with it.
    Questions hidden from the reader (:mod:`server.personal`) are neither counted nor mapped,
    and the map's names are what the reader may see.
    """
    schema = FormSchema.of(schema)
    shown = [f for f in schema.questions if not disclosure.hidden(f.path)]
    selects = [f for f in shown if f.type in CHARTED_SELECTS]
    geopoints = [f for f in shown if f.type == "geopoint"]
    counters = {f.path: Counter() for f in selects}
    answered = Counter()
    points: list[Point] = []
    sampled = 0
    if selects or geopoints:
        rows = db_session.execute(
            sa.select(
                SubmissionVersion.raw_document,
                Submission.instance_id,
                SubmissionVersion.raw_instance_name,
            )
            .select_from(_LIVE_CURRENT)
            .where(*_live(form_id))
            .order_by(Submission.id.desc())
            .limit(SAMPLE_LIMIT)
            .execution_options(yield_per=500)
        )
        personal_points = any(disclosure.fields.is_personal(f.path) for f in geopoints)
        for document, instance_id, stored_name in rows:
            sampled += 1
            if not isinstance(document, dict):
                continue  # encrypted, or not parsed
            for select in selects:
                for value in select.values_in(document):
                    if not isinstance(value, str) or not value.strip():
                        continue
                    answered[select.path] += 1
                    counters[select.path].update(select.chosen(value))
            if len(points) < MAX_POINTS:
                for geopoint in geopoints:
                    for value in geopoint.values_in(document):
                        point = _parse_point(value)
                        if point is not None and len(points) < MAX_POINTS:
                            name = disclosure.instance_name(
                                stored_name, instance_id=instance_id, channel="console.map"
                            )
                            if personal_points:
                                disclosure.note("console.map", [instance_id])
                            points.append(Point(*point, instance_id, name))
    else:
        sampled = db_session.execute(
            sa.select(sa.func.count()).select_from(Submission).where(*_live(form_id))
        ).scalar_one()
        sampled = min(sampled, SAMPLE_LIMIT)
    result = Answers(sampled=sampled, points=points)
    for select in selects:
        counter = counters[select.path]
        choices = [(c.name, c.labels, counter.pop(c.name, 0)) for c in schema.choices(select)]
        # Values outside the list (an older version's choice, a file list not attached yet).
        choices += [(value, {}, n) for value, n in counter.most_common()]
        result.choices.append(
            ChoiceCount(
                path=select.path,
                name=select.name,
                type=select.type,
                labels=select.labels,
                choices=choices,
                answered=answered[select.path],
            )
        )
    return result


def record_counts(db_session: Session, form_ids: list[int]) -> dict[int, int]:
    """Return how many live records each form has (forms without any are left out)."""
    if not form_ids:
        return {}
    return dict(
        db_session.execute(
            sa.select(Submission.form_id, sa.func.count())
            .where(Submission.form_id.in_(form_ids), Submission.live())
            .group_by(Submission.form_id)
        ).all()
    )


def submitters(db_session: Session, form_id: int) -> list[tuple[int, str]]:
    """Return who sent records to the form (id and name), by name: the enumerator filter."""
    rows = db_session.execute(
        sa.select(Actor.id, Actor.display_name)
        .where(
            Actor.id.in_(
                sa.select(Submission.submitter_id)
                .where(Submission.form_id == form_id, Submission.draft.is_(False))
                .distinct()
            )
        )
        .order_by(Actor.display_name, Actor.id)
    ).all()
    return [(actor_id, name) for actor_id, name in rows]
