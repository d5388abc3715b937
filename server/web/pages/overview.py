"""A form's overview: records per day and per enumerator, completeness, answers, a map."""

from __future__ import annotations

from flask import Response, current_app

from server import db, personal
from server.forms import services as forms
from server.submissions import overview
from server.submissions import services as submissions
from server.web import charts, common, labels
from server.web.pages.submissions import REVIEW_STATES
from server.web.views import bp

# Links from each map point to its record only while the map stays light to download.
MAX_LINKED_POINTS = 300


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
    questions = [
        {
            "label": labels.pick(choice.labels, language, choice.name),
            "name": choice.name,
            "multiple": choice.type == "select_multiple",
            "answered": choice.answered,
            "bars": charts.bars(
                [(labels.pick(lab, language, value), n) for value, lab, n in choice.choices],
                total=choice.answered if choice.type != "select_multiple" else None,
                keys=[value for value, _lab, _n in choice.choices],
            ),
        }
        for choice in found.choices
    ]
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
        questions=questions,
        sampled=found.sampled,
        sample_limit=overview.SAMPLE_LIMIT,
        map=charts.point_map(
            [(p.latitude, p.longitude, p.instance_id, p.name) for p in found.points],
            tile_url=current_app.config.get("TILE_URL") or None,
        ),
        linked=len(found.points) <= MAX_LINKED_POINTS,
    )
