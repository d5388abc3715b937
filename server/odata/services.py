"""What the OData views of a form read: its tables, its records, the ``$filter`` condition."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from server.auth.models import Actor
from server.exports import layout as L
from server.exports import services as exports
from server.forms.models import Form, FormVersion
from server.odata import format as fmt
from server.odata.filter import parse_filter
from server.submissions import paging
from server.submissions import services as submissions
from server.submissions.services import SubmissionRow


def tree(db_session: Session, form: Form, *, draft: bool = False) -> list[fmt.Node]:
    """Return the form's OData tree: every published version's fields, or the draft's."""
    if not draft:
        return fmt.tree(exports.load_layout(db_session, form))
    version = db_session.get(FormVersion, form.draft_version_id)
    layout = L.merge(form.xml_form_id, [version.form_schema], {str(version.id): version.version})
    return fmt.tree(layout)


def conditions(db_session: Session, text: str | None) -> list[Any]:
    """Return the SQL conditions of a ``$filter`` on the records (none when it is empty)."""
    text = (text or "").strip()
    if not text:
        return []
    # From a repeat table, Central names the record's fields through $root.
    dialect = db_session.get_bind().dialect.name
    return [parse_filter(text.replace("$root/Submissions/", ""), dialect)]


def record_row(
    db_session: Session, form: Form, instance_id: str, *, draft: bool = False
) -> SubmissionRow:
    """Return one record as the tables list it (404 when the form has no such record)."""
    submission = submissions.get(db_session, form.id, instance_id, draft=draft)
    version = submissions.current_version(db_session, submission)
    form_version = db_session.get(FormVersion, version.form_version_id)
    actor = submission.submitter_id
    submitter = db_session.get(Actor, actor) if actor else None
    row = SubmissionRow(
        submission,
        version,
        form_version.version if form_version else "",
        submitter.display_name if submitter else None,
    )
    return paging.add_edit_counts(db_session, [row])[0]
