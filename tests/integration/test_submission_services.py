"""Listing, filtering, reviewing, commenting and deleting records (the services the API and
the console share)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from server import errors
from server.audit.models import AuditEvent
from server.submissions import services
from server.submissions.services import SubmissionFilter
from tests.support import factories
from tests.support.openrosa import multipart, new_instance_id, publish_form, record


@pytest.fixture
def records(client, db_session):
    project = factories.project(db_session)
    app_user, token = factories.app_user(db_session, project.id)
    form = publish_form(db_session, project.id, app_user_ids=(app_user.actor_id,))
    base = f"/v1/key/{token}/projects/{project.id}/submission"
    ids = []
    for name in ("Awa Traoré", "Moussa Keïta", "Fanta Coulibaly"):
        iid = new_instance_id()
        ids.append(iid)
        assert (
            client.post(
                base, data=multipart(record(iid, name=name, photo=None, audit=None))
            ).status_code
            == 201
        )
    edit_id = new_instance_id()
    assert (
        client.post(
            base,
            data=multipart(
                record(
                    edit_id,
                    name="Awa Traoré",
                    age="35",
                    deprecated_id=ids[0],
                    photo=None,
                    audit=None,
                )
            ),
        ).status_code
        == 201
    )
    reviewer = factories.user(db_session, "coord@example.org")
    return {
        "form": form,
        "ids": ids,
        "edit_id": edit_id,
        "project": project,
        "app_user": app_user,
        "reviewer": reviewer,
    }


def test_list_gives_current_versions_newest_first_with_edit_counts(db_session, records):
    rows = services.list_submissions(db_session, records["form"].id)
    assert [r.submission.instance_id for r in rows] == list(reversed(records["ids"]))
    edited = rows[-1]
    assert edited.version.instance_id == records["edit_id"]
    assert edited.version.raw_document["age"] == "35"
    assert edited.edits == 1 and edited.submission.review_state == "edited"
    assert edited.submitter_name == "Tablette 1" and edited.form_version == "2024050701"
    assert services.count_submissions(db_session, records["form"].id) == 3


def test_filters_by_search_review_state_and_keyset(db_session, records):
    form_id = records["form"].id
    found = services.list_submissions(
        db_session, form_id, SubmissionFilter(search="keïta", search_instance_name=True)
    )
    assert [r.version.raw_instance_name for r in found] == ["Moussa Keïta"]
    # Names are searched only when the reader may see them (server/personal.py decides).
    unseen = services.list_submissions(db_session, form_id, SubmissionFilter(search="keïta"))
    assert unseen == []

    received = services.list_submissions(
        db_session, form_id, SubmissionFilter(review_states=[None])
    )
    assert len(received) == 2
    first = services.list_submissions(db_session, form_id, limit=1, newest_first=False)
    after = services.list_submissions(
        db_session, form_id, limit=10, filters=SubmissionFilter(after_id=first[0].submission.id)
    )
    assert [r.submission.instance_id for r in after] == records["ids"][1:]


def test_a_record_is_found_by_its_root_or_a_later_instance_id(db_session, records):
    by_root = services.get(db_session, records["form"].id, records["ids"][0])
    by_edit = services.get(db_session, records["form"].id, records["edit_id"])
    assert by_root.id == by_edit.id
    assert [v.instance_id for v in services.versions(db_session, by_root)] == [
        records["edit_id"],
        records["ids"][0],
    ]
    with pytest.raises(errors.NotFound):
        services.get(db_session, records["form"].id, "uuid:nope")


def test_review_with_a_comment_is_audited(db_session, records):
    submission = services.get(db_session, records["form"].id, records["ids"][1])
    reviewer = records["reviewer"].actor_id
    services.set_review_state(
        db_session,
        submission,
        "hasIssues",
        actor_id=reviewer,
        project_id=records["project"].id,
        comment="Âge à vérifier",
    )
    [(comment, author)] = services.comments(db_session, submission)
    assert comment.body == "Âge à vérifier" and author == "coord@example.org"
    actions = [e.action for e, _ in services.audit_events(db_session, submission)]
    assert actions == ["submission.create", "submission.update", "comment.create"]
    with pytest.raises(errors.UnexpectedValue):
        services.set_review_state(
            db_session, submission, "great", actor_id=reviewer, project_id=None
        )


def test_bulk_review_changes_every_named_record(db_session, records):
    changed = services.bulk_review(
        db_session,
        records["form"].id,
        records["ids"][1:],
        "approved",
        actor_id=records["reviewer"].actor_id,
        project_id=records["project"].id,
    )
    assert changed == 2
    assert services.review_counts(db_session, records["form"].id) == {"approved": 2, "edited": 1}


def test_deleted_records_leave_lists_and_come_back_when_restored(client, db_session, records):
    form_id = records["form"].id
    submission = services.get(db_session, form_id, records["ids"][2])
    services.delete(db_session, submission, actor_id=None, project_id=None)
    assert services.count_submissions(db_session, form_id) == 2
    trash = services.list_submissions(db_session, form_id, SubmissionFilter(deleted=True))
    assert [r.submission.instance_id for r in trash] == [records["ids"][2]]
    restored = services.get(db_session, form_id, records["ids"][2], deleted=True)
    services.restore(db_session, restored, actor_id=None, project_id=None)
    assert services.count_submissions(db_session, form_id) == 3
    assert (
        db_session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action.in_(["submission.delete", "submission.restore"]))
        )
        == 2
    )
