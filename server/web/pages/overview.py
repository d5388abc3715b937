"""A form's overview: records per day and per enumerator, completeness, answers, a map.

A form of 500 questions with a list of thousands of villages made this page megabytes long
(issue 19). So the answers are shown :data:`QUESTIONS_PER_PAGE` questions at a time, and a
list longer than :data:`~server.web.common.LONG_LIST` shows its :data:`TOP_ANSWERS` most
frequent answers and a count of the rest, with a link to a page of its own, filtered and paged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Response, current_app, request
from flask_babel import gettext

from server import db, errors, personal
from server.forms import services as forms
from server.submissions import overview
from server.submissions import services as submissions
from server.web import charts, common, labels
from server.web.pages.submissions import REVIEW_STATES
from server.web.views import bp

# Links from each map point to its record only while the map stays light to download.
MAX_LINKED_POINTS = 300
# What a long choice list shows on the overview: its most frequent answers.
TOP_ANSWERS = 10
QUESTIONS_PER_PAGE = 40


def _question(choice: overview.ChoiceCount, language: str | None) -> dict[str, Any]:
    """Return what the overview shows of one select question: bars, and the rest counted."""
    items = [(labels.pick(lab, language, value), n, value) for value, lab, n in choice.choices]
    # Shares of one answer per record (select one) or of all the choices ticked (multiple).
    whole = choice.answered if choice.type != "select_multiple" else sum(n for _l, n, _v in items)
    rest = None
    if len(items) > common.LONG_LIST:
        ranked = sorted((item for item in items if item[1]), key=lambda item: -item[1])
        shown = ranked[:TOP_ANSWERS]
        rest = {
            "choices": len(items) - len(shown),
            "answers": sum(n for _l, n, _v in items) - sum(n for _l, n, _v in shown),
            "total": len(items),
        }
        items = shown
    return {
        "label": labels.pick(choice.labels, language, choice.name),
        "name": choice.name,
        "path": choice.path,
        "multiple": choice.type == "select_multiple",
        "answered": choice.answered,
        "bars": charts.bars(
            [(label, n) for label, n, _v in items],
            total=whole or None,
            keys=[value for _l, _n, value in items],
        ),
        "rest": rest,
    }


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/overview")
def form_overview(project_id: int, xml_form_id: str) -> Response:
    """Show the form's figures as charts drawn on the server."""
    project, form = common.form_for(project_id, xml_form_id, "submission.list")
    db_session = db.session()
    version = forms.current_version(db_session, form)
    schema = version.form_schema if version is not None else None
    language = labels.for_schema(schema, common.ui_language())
    completeness = overview.completeness(db_session, form.id)
    enumerators = overview.per_submitter(db_session, form.id)
    found = overview.answers(db_session, form.id, schema, personal.for_form(db_session, form))
    questions = common.paged(
        found.choices, request.args.get("page"), gettext("Page"), QUESTIONS_PER_PAGE
    )

    def questions_url(number: int) -> str:
        url = common.query_url(
            "web.form_overview",
            {"page": number if number > 1 else None},
            project_id=project.id,
            xml_form_id=form.xml_form_id,
        )
        return url + "#answers"

    review = submissions.review_counts(db_session, form.id)
    return common.page(
        "web/overview.html",
        project=project,
        form=form,
        days=charts.time_chart(overview.per_day(db_session, form.id)),
        enumerators=charts.bars([(e.name or "—", e.count) for e in enumerators]),
        completeness=completeness,
        review=[
            (label, review.get(None if key == "received" else key, 0))
            for key, label in REVIEW_STATES.items()
        ],
        questions=[_question(choice, language) for choice in questions.items],
        shown=questions,
        **common.pager_links(questions, questions_url),
        sampled=found.sampled,
        sample_limit=overview.SAMPLE_LIMIT,
        map=charts.point_map(
            [(p.latitude, p.longitude, p.instance_id, p.name) for p in found.points],
            tile_url=current_app.config.get("TILE_URL") or None,
        ),
        linked=len(found.points) <= MAX_LINKED_POINTS,
    )


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/overview/choices")
def form_overview_choices(project_id: int, xml_form_id: str) -> Response:
    """Show every choice of one select question with its answers, filtered and paged."""
    project, form = common.form_for(project_id, xml_form_id, "submission.list")
    db_session = db.session()
    version = forms.current_version(db_session, form)
    field = version.form_schema.field(request.args.get("field", "")) if version else None
    if field is None or field.type not in overview.CHARTED_SELECTS:
        raise errors.NotFound()
    schema = version.form_schema
    # Only this question is counted; one hidden from the reader is counted for nobody.
    found = overview.answers(
        db_session,
        form.id,
        dataclasses.replace(schema, fields=(field,)),
        personal.for_form(db_session, form),
    )
    if not found.choices:
        raise errors.NotFound()
    choice = found.choices[0]
    language = labels.for_schema(schema, common.ui_language())
    items = [(labels.pick(lab, language, value), n, value) for value, lab, n in choice.choices]
    whole = choice.answered if choice.type != "select_multiple" else sum(n for _l, n, _v in items)
    largest = max((n for _l, n, _v in items), default=0)
    # Most answered first; the others in the list's order.
    items.sort(key=lambda item: -item[1])
    query = request.args.get("q", "").strip()
    if query:
        items = [item for item in items if common.matching(query, [item[0], item[2]])]
    shown = common.paged(items, request.args.get("page"), gettext("Page"))
    bars = charts.bars(
        [(label, n) for label, n, _v in shown.items],
        total=whole or None,
        keys=[value for _l, _n, value in shown.items],
        largest=largest,
    )

    def page_url(number: int) -> str:
        return common.query_url(
            "web.form_overview_choices",
            {"field": field.path, "q": query, "page": number if number > 1 else None},
            project_id=project.id,
            xml_form_id=form.xml_form_id,
        )

    return common.page(
        "web/overview_choices.html",
        project=project,
        form=form,
        field=field,
        label=labels.pick(field.labels, language, field.name),
        multiple=choice.type == "select_multiple",
        answered=choice.answered,
        choices=len(choice.choices),
        bars=bars,
        shown=shown,
        query=query,
        sampled=found.sampled,
        sample_limit=overview.SAMPLE_LIMIT,
        **common.pager_links(shown, page_url),
    )
