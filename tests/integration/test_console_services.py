"""The services added for the console: members and app users, the audit log reader, the
overview's figures, and paging backwards through records. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from server import errors, personal
from server.audit import services as audit_log
from server.audit.models import AuditEvent
from server.auth import app_users, members
from server.auth import services as accounts
from server.auth.models import Assignment
from server.db import utcnow
from server.submissions import overview
from server.submissions import services as submissions
from server.submissions.services import SubmissionFilter
from tests.support import factories
from tests.support.openrosa import OPENROSA, multipart, new_instance_id, publish_form, record

SECRET = "test-secret-key-not-for-production"


@pytest.fixture
def project(db_session):
    return factories.project(db_session)


# ---- members and app users -------------------------------------------------------------------


def test_members_are_added_by_email_listed_and_removed(db_session, project):
    admin = factories.user(db_session, "admin@example.org", role="admin")
    factories.user(db_session, "Analyste@Example.org")
    user = members.add_member(
        db_session, project.id, " analyste@example.org ", "viewer", actor_id=admin.actor_id
    )
    members.add_member(db_session, project.id, "analyste@example.org", "viewer", actor_id=None)
    members.add_member(db_session, project.id, "analyste@example.org", "manager", actor_id=None)
    listed = members.project_members(db_session, project.id)
    assert [(m.email, m.roles) for m in listed] == [("analyste@example.org", ["manager", "viewer"])]
    members.remove_member(db_session, project.id, user.actor_id, "manager", actor_id=None)
    assert members.project_members(db_session, project.id)[0].roles == ["viewer"]
    with pytest.raises(errors.NotFound):
        members.remove_member(db_session, project.id, user.actor_id, "manager", actor_id=None)
    with pytest.raises(errors.NoSuchUser):
        members.add_member(db_session, project.id, "nobody@example.org", "viewer", actor_id=None)
    with pytest.raises(errors.UnexpectedValue):
        members.add_member(db_session, project.id, "analyste@example.org", "admin", actor_id=None)
    actions = db_session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)).all()
    # The accounts and the administrator's role made by the factories, then the two roles
    # given (giving one again changes nothing and is not an event) and the one taken away.
    assert actions == ["user.create", "assignment.create", "user.create"] + [
        "assignment.create"
    ] * 2 + ["assignment.delete"]


def test_accounts_created_by_an_administrator(db_session):
    admin = factories.user(db_session, "admin@example.org", role="admin")
    created = members.create_account(
        db_session,
        "Chef@Example.org",
        "a long first password",
        display_name="Cheffe",
        admin=True,
        actor_id=admin.actor_id,
    )
    assert created.email == "chef@example.org"
    assert accounts.site_admin_ids(db_session) == {admin.actor_id, created.actor_id}
    with pytest.raises(errors.UnexpectedValue):
        members.create_account(db_session, "not-an-email", "a long password", actor_id=None)
    with pytest.raises(errors.Conflict):
        members.create_account(db_session, "chef@example.org", "a long password", actor_id=None)
    with pytest.raises(errors.PasswordTooShort):
        members.create_account(db_session, "new@example.org", "short", actor_id=None)


def test_app_users_get_forms_and_lose_their_token_when_revoked(db_session, project):
    form = publish_form(db_session, project.id)
    other = publish_form(db_session, project.id, form_id="autre")
    foreign = publish_form(db_session, factories.project(db_session, "B").id, form_id="b")
    tablet = members.create_app_user(
        db_session,
        project.id,
        "  Tablette 3 ",
        secret_key=SECRET,
        actor_id=None,
        form_ids=[form.id],
    )
    assert tablet.actor.display_name == "Tablette 3"
    assert members.app_user_form_ids(db_session, [tablet.actor_id]) == {tablet.actor_id: {form.id}}
    members.set_app_user_forms(db_session, tablet, {other.id}, actor_id=None)
    assert members.app_user_form_ids(db_session, [tablet.actor_id])[tablet.actor_id] == {other.id}
    with pytest.raises(errors.NotFound):
        members.set_app_user_forms(db_session, tablet, {foreign.id}, actor_id=None)
    assert [a.actor_id for a in members.app_users(db_session, project.id)] == [tablet.actor_id]
    token = app_users.token_of(tablet, secret_key=SECRET)
    assert app_users.find_by_token(db_session, token) is not None
    members.revoke_app_user(db_session, tablet, actor_id=None)
    assert app_users.find_by_token(db_session, token) is None
    assert members.get_app_user(db_session, project.id, tablet.actor_id).revoked_at is not None
    with pytest.raises(errors.NotFound):
        members.get_app_user(db_session, foreign.project_id, tablet.actor_id)
    assert (
        db_session.scalar(
            sa.select(sa.func.count())
            .select_from(Assignment)
            .where(Assignment.actor_id == tablet.actor_id)
        )
        == 1
    )
    actions = db_session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)).all()
    # Each change of rights is its own event (server/auth/services.py, app_users.py).
    assert actions == [
        "field_key.create",
        "assignment.create",
        "assignment.create",
        "assignment.delete",
        "field_key.revoke",
    ]


# ---- the audit log ---------------------------------------------------------------------------


def test_audit_events_are_filtered_and_paged_newest_first(db_session, project):
    other = factories.project(db_session, "Autre")
    who = factories.user(db_session, "coord@example.org")
    start = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    for day, action, project_id in [
        (0, "form.create", project.id),
        (1, "submission.update", project.id),
        (2, "submission.delete", other.id),
        (3, "user.create", None),
        (4, "submissionx.update", project.id),
    ]:
        db_session.add(
            AuditEvent(
                actor_id=who.actor_id,
                action=action,
                project_id=project_id,
                logged_at=start + dt.timedelta(days=day),
            )
        )
    db_session.commit()
    every = audit_log.list_events(db_session, audit_log.AuditFilter())
    assert [r.event.action for r in every][:2] == ["submissionx.update", "user.create"]
    assert every[0].actor_name == "coord@example.org" and every[0].project_name == project.name
    mine = audit_log.list_events(db_session, audit_log.AuditFilter(project_ids={project.id}))
    assert {r.event.action for r in mine} == {
        "form.create",
        "submission.update",
        "submissionx.update",
    }
    family = audit_log.list_events(db_session, audit_log.AuditFilter(action="submission"))
    assert [r.event.action for r in family] == ["submission.delete", "submission.update"]
    window = audit_log.list_events(
        db_session,
        audit_log.AuditFilter(start=start + dt.timedelta(days=1), end=start + dt.timedelta(days=3)),
    )
    assert [r.event.action for r in window] == ["submission.delete", "submission.update"]
    page = audit_log.list_events(db_session, audit_log.AuditFilter(), limit=2)
    after = audit_log.list_events(
        db_session, audit_log.AuditFilter(before_id=page[-1].event.id), limit=2
    )
    assert [r.event.action for r in after] == ["submission.delete", "submission.update"]
    assert audit_log.list_events(db_session, audit_log.AuditFilter(project_ids=set())) == []


# ---- the overview's figures, and paging backwards --------------------------------------------


@pytest.fixture
def received(client, db_session, project):
    """Four records from two tablets (one with a photo still missing), one deleted."""
    first, first_token = factories.app_user(db_session, project.id, "Tablette A")
    second, second_token = factories.app_user(db_session, project.id, "Tablette B")
    form = publish_form(db_session, project.id, app_user_ids=(first.actor_id, second.actor_id))
    ids = []
    for token, name, photo in [
        (first_token, "Awa", None),
        (first_token, "Moussa", "missing.jpg"),
        (second_token, "Fanta", None),
        (first_token, "Gone", None),
    ]:
        iid = new_instance_id()
        ids.append(iid)
        response = client.post(
            f"/v1/key/{token}/projects/{project.id}/submission",
            data=multipart(record(iid, name=name, photo=photo, audit=None)),
            headers=OPENROSA,
        )
        assert response.status_code == 201
    gone = submissions.get(db_session, form.id, ids[-1])
    submissions.delete(db_session, gone, actor_id=None, project_id=project.id)
    return {"form": form, "ids": ids, "first": first, "second": second}


def test_overview_counts_per_day_per_enumerator_and_missing_files(db_session, received):
    form_id = received["form"].id
    today = utcnow().date()
    assert overview.per_day(db_session, form_id) == [(today, 3)]
    assert [(s.name, s.count) for s in overview.per_submitter(db_session, form_id)] == [
        ("Tablette A", 2),
        ("Tablette B", 1),
    ]
    complete = overview.completeness(db_session, form_id)
    assert complete == overview.Completeness(
        records=3, records_missing=1, attachments_expected=1, attachments_missing=1
    )
    assert overview.record_counts(db_session, [form_id, 999]) == {form_id: 3}
    assert overview.submitters(db_session, form_id) == [
        (received["first"].actor_id, "Tablette A"),
        (received["second"].actor_id, "Tablette B"),
    ]


def test_answers_per_choice_and_places_come_from_the_documents(db_session, received):
    schema = {
        "root": "data",
        "choiceLists": {
            "villages": [
                {"name": "segou", "labels": {"default": "Ségou"}},
                {"name": "bla", "labels": {"default": "Bla"}},
            ]
        },
        "fields": [
            {
                "path": "/data/village",
                "name": "village",
                "kind": "field",
                "type": "select_one",
                "choices": "villages",
                "labels": {"default": "Village"},
            },
            {
                "path": "/data/name",
                "name": "name",
                "kind": "field",
                "type": "geopoint",
                "labels": {},
            },
        ],
    }
    found = overview.answers(db_session, received["form"].id, schema, personal.unrestricted())
    assert found.sampled == 3
    village = found.choices[0]
    assert village.answered == 3
    assert [(value, n) for value, _labels, n in village.choices] == [("segou", 3), ("bla", 0)]
    assert found.points == []  # names are not places: nothing plotted, nothing broken
    nothing = overview.answers(db_session, received["form"].id, None, personal.unrestricted())

    assert nothing.choices == [] and nothing.sampled == 3


def test_records_page_backwards_by_id(db_session, received):
    form_id = received["form"].id
    newest = submissions.list_submissions(db_session, form_id, limit=1)
    older = submissions.list_submissions(
        db_session, form_id, SubmissionFilter(before_id=newest[0].submission.id), limit=5
    )
    assert [r.version.raw_instance_name for r in newest + older] == ["Fanta", "Moussa", "Awa"]
