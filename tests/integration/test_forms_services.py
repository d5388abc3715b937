"""The life of a form through the services, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io

import pytest
import sqlalchemy as sa

from server import db, errors
from server.audit.models import AuditEvent
from server.forms import compiler, services
from server.forms.models import Form, FormAttachment, FormVersion
from server.storage import services as storage
from server.submissions.models import Submission
from tests.fixtures.forms import workbooks
from tests.support import factories


@pytest.fixture
def session(app):
    """A writable session inside the application context (services commit themselves)."""
    with app.app_context(), db.database().session() as db_session:
        yield db_session


@pytest.fixture
def project_id(session) -> int:
    return factories.project(session).id


def xlsx_upload(markdown: str, filename: str = "simple.xlsx") -> services.Upload:
    return services.Upload(
        data=workbooks.xlsx(markdown), filename=filename, content_type=workbooks.XLSX_TYPE
    )


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def count(session, model) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(model))


def actions(session) -> list[str]:
    return list(session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)))


def test_upload_creates_a_draft_with_its_spreadsheet_schema_and_token(session, project_id):
    upload = xlsx_upload(workbooks.simple("1"))
    form = services.create_form(session, project_id, upload)
    assert (form.xml_form_id, form.state, form.current_version_id) == ("simple", "open", None)
    draft = services.draft_version(session, form)
    assert draft.published_at is None and draft.version == "1"
    assert draft.title == "Formulaire simple"
    assert len(draft.draft_token) == 64
    # The hash is the MD5 of exactly the bytes served (openrosa.md §2).
    assert draft.hash == hashlib.md5(services.xml_bytes(draft)).hexdigest()
    assert draft.sha256 == hashlib.sha256(services.xml_bytes(draft)).hexdigest()
    assert draft.schema["formId"] == "simple"
    assert [f["name"] for f in draft.schema["fields"]][:2] == ["name", "age"]
    assert draft.validation == "skipped"
    blob, filename, content_type = services.source_file(session, draft)
    assert storage.read_all(blob) == upload.data
    assert (filename, content_type) == ("simple.xlsx", workbooks.XLSX_TYPE)
    assert actions(session) == ["form.create"]


def test_publish_at_once_then_identical_upload_is_harmless(session, project_id):
    upload = xlsx_upload(workbooks.simple("1"))
    form = services.create_form(session, project_id, upload, publish=True)
    current = services.current_version(session, form)
    assert current.published_at is not None and current.draft_token is None
    assert form.draft_version_id is None
    again = services.create_form(session, project_id, xlsx_upload(workbooks.simple("1")))
    assert again.id == form.id
    assert count(session, FormVersion) == 1
    assert actions(session) == ["form.create", "form.update.publish"]


def test_other_content_under_an_existing_form_id_is_409(session, project_id):
    services.create_form(session, project_id, xlsx_upload(workbooks.simple("1")), publish=True)
    with pytest.raises(errors.Conflict) as caught:
        services.create_form(session, project_id, xlsx_upload(workbooks.simple("2")))
    assert caught.value.code == "409.3"
    assert count(session, FormVersion) == 1


def test_bad_upload_stores_nothing(session, project_id):
    upload = services.Upload(data=workbooks.data("broken.md"), filename="broken.md")
    with pytest.raises(errors.XlsformInvalid):
        services.create_form(session, project_id, upload)
    assert count(session, Form) == 0 and count(session, FormVersion) == 0
    assert actions(session) == []


def test_warnings_need_ignore_warnings(session, project_id):
    upload = services.Upload(data=workbooks.data("warnings.md"), filename="warnings.md")
    with pytest.raises(errors.FormWarnings) as caught:
        services.create_form(session, project_id, upload)
    assert caught.value.code == "400.16"
    assert caught.value.details["warnings"][0]["row"] == 2
    assert count(session, Form) == 0
    form = services.create_form(session, project_id, upload, ignore_warnings=True)
    draft = services.draft_version(session, form)
    assert draft.warnings[0]["sheet"] == "choices"


def test_form_id_fallback_names_a_form_without_settings(session, project_id):
    markdown = "| survey |\n| | type | name | label |\n| | text | q | Q |\n"
    upload = services.Upload(data=workbooks.xlsx(markdown), filename="upload.xlsx")
    form = services.create_form(session, project_id, upload, form_id_fallback="menage_2024")
    assert form.xml_form_id == "menage_2024"


def test_xform_upload_has_no_source_spreadsheet(session, project_id):
    xml = compiler.compile_upload(workbooks.data("simple.md"), filename="s.md").xml
    upload = services.Upload(data=xml.encode(), content_type="application/xml")
    form = services.create_form(session, project_id, upload, publish=True)
    version = services.current_version(session, form)
    assert version.xml == xml and version.hash == md5(xml)
    assert services.source_file(session, version) is None


def test_new_version_is_published_and_old_versions_still_take_records(session, project_id):
    form = services.create_form(
        session, project_id, xlsx_upload(workbooks.simple("1")), publish=True
    )
    first = services.current_version(session, form)
    services.set_draft(session, form, xlsx_upload(workbooks.simple("2", extra_question=True)))
    second = services.publish_draft(session, form)
    assert services.current_version(session, form).id == second.id
    assert second.version == "2" and second.hash != first.hash
    assert services.version_for_submission(session, form, "1", draft=False).id == first.id
    assert services.version_for_submission(session, form, "2", draft=False).id == second.id
    assert services.version_for_submission(session, form, "3", draft=False) is None
    assert [v.version for v in services.published_versions(session, form)] == ["2", "1"]
    assert actions(session) == [
        "form.create",
        "form.update.publish",
        "form.update.draft.set",
        "form.update.publish",
    ]


def test_changed_xml_under_a_published_version_is_409_then_version_param_fixes_it(
    session, project_id
):
    form = services.create_form(
        session, project_id, xlsx_upload(workbooks.simple("1")), publish=True
    )
    first = services.current_version(session, form)
    services.set_draft(session, form, xlsx_upload(workbooks.simple("1", extra_question=True)))
    with pytest.raises(errors.VersionConflict) as caught:
        services.publish_draft(session, form)
    assert caught.value.code == "409.6"
    assert services.current_version(session, form).id == first.id
    draft = services.draft_version(session, form)
    assert draft is not None  # kept, so that the coordinator can publish it under a new version
    published = services.publish_draft(session, form, version="1b")
    assert published.version == "1b"
    assert 'version="1b"' in published.xml and 'version="1"' not in published.xml
    assert published.hash == md5(published.xml)
    assert published.schema["version"] == "1b"


def test_republishing_identical_content_answers_the_existing_version(session, project_id):
    form = services.create_form(
        session, project_id, xlsx_upload(workbooks.simple("1")), publish=True
    )
    first = services.current_version(session, form)
    services.set_draft(session, form, xlsx_upload(workbooks.simple("1")))
    again = services.publish_draft(session, form)
    assert again.id == first.id
    assert form.draft_version_id is None
    assert count(session, FormVersion) == 1


def test_draft_copy_of_the_published_version(session, project_id):
    form = services.create_form(
        session, project_id, xlsx_upload(workbooks.simple("1")), publish=True
    )
    current = services.current_version(session, form)
    copy = services.set_draft(session, form)
    assert copy.id != current.id and copy.xml == current.xml and copy.hash == current.hash
    assert copy.xls_blob_id == current.xls_blob_id and copy.published_at is None


def test_draft_without_published_version_cannot_be_copied(session, project_id):
    form = services.create_form(session, project_id, xlsx_upload(workbooks.simple("1")))
    with pytest.raises(errors.NoPublishedVersion):
        services.set_draft(session, form)


def test_draft_upload_for_another_form_id_is_refused(session, project_id):
    form = services.create_form(session, project_id, xlsx_upload(workbooks.simple("1")))
    with pytest.raises(errors.UnexpectedValue) as caught:
        services.set_draft(session, form, xlsx_upload(workbooks.simple("1", form_id="autre")))
    assert "autre" in caught.value.render_message()


def test_new_draft_keeps_the_token_and_drops_the_old_draft_and_its_test_records(
    session, project_id
):
    form = services.create_form(session, project_id, xlsx_upload(workbooks.simple("1")))
    old = services.draft_version(session, form)
    token = old.draft_token
    session.add(Submission(form_id=form.id, draft=True, instance_id="uuid:test-record"))
    session.commit()
    new = services.set_draft(session, form, xlsx_upload(workbooks.simple("2")))
    assert new.draft_token == token
    assert session.get(FormVersion, old.id) is None
    assert count(session, Submission) == 0


def test_publishing_removes_draft_test_records(session, project_id):
    form = services.create_form(session, project_id, xlsx_upload(workbooks.simple("1")))
    session.add(Submission(form_id=form.id, draft=True, instance_id="uuid:test-record"))
    session.add(Submission(form_id=form.id, draft=False, instance_id="uuid:real-record"))
    session.commit()
    services.publish_draft(session, form)
    assert list(session.scalars(sa.select(Submission.instance_id))) == ["uuid:real-record"]


def test_media_missing_blocks_publishing_until_attached_and_is_carried_forward(session, project_id):
    upload = xlsx_upload(workbooks.text("household.md"), "household.xlsx")
    form = services.create_form(session, project_id, upload)
    draft = services.draft_version(session, form)
    assert services.missing_media(session, draft) == ["besoins.png", "needs.png", "villages.csv"]
    with pytest.raises(errors.MissingMedia) as caught:
        services.publish_draft(session, form)
    assert caught.value.code == "409.21"
    assert caught.value.details["files"] == ["besoins.png", "needs.png", "villages.csv"]
    assert "villages.csv" in caught.value.render_message()

    with pytest.raises(errors.NotFound):
        services.attach(session, form, "unknown.png", io.BytesIO(b"x"))
    for name, content in [("besoins.png", b"\x89PNG fr"), ("needs.png", b"\x89PNG en")]:
        services.attach(session, form, name, io.BytesIO(content), content_type="image/png")
    services.attach(session, form, "villages.csv", io.BytesIO(workbooks.data("villages.csv")))
    draft = services.draft_version(session, form)
    # The CSV fills its choice list in the schema as soon as it is attached.
    assert [c["name"] for c in draft.schema["choiceLists"]["file:villages.csv"]] == ["segou", "bla"]
    rows = {a.name: (a, blob) for a, blob in services.attachments(session, draft)}
    assert rows["villages.csv"][1].md5 == hashlib.md5(workbooks.data("villages.csv")).hexdigest()
    assert rows["villages.csv"][0].content_type == "text/csv"
    assert rows["besoins.png"][0].type == "image"
    first = services.publish_draft(session, form)
    assert first.published_at is not None

    changed = workbooks.text("household.md").replace("2024050701", "2024050702")
    second = services.set_draft(session, form, xlsx_upload(changed, "household.xlsx"))
    assert services.missing_media(session, second) == []
    assert second.schema["choiceLists"]["file:villages.csv"][0]["labels"]["English (en)"] == "Segou"
    services.publish_draft(session, form)
    assert actions(session).count("form.attachment.update") == 3


def test_clearing_a_draft_attachment_empties_its_choice_list(session, project_id):
    upload = xlsx_upload(workbooks.text("household.md"), "household.xlsx")
    form = services.create_form(session, project_id, upload)
    services.attach(session, form, "villages.csv", io.BytesIO(workbooks.data("villages.csv")))
    services.clear_attachment(session, form, "villages.csv")
    draft = services.draft_version(session, form)
    assert draft.schema["choiceLists"]["file:villages.csv"] == []
    assert "villages.csv" in services.missing_media(session, draft)


def test_media_given_with_the_upload_publishes_at_once(session, project_id):
    upload = xlsx_upload(workbooks.text("household.md"), "household.xlsx")
    media = {
        "besoins.png": b"fr",
        "needs.png": b"en",
        "villages.csv": workbooks.data("villages.csv"),
    }
    form = services.create_form(session, project_id, upload, publish=True, media=media)
    current = services.current_version(session, form)
    assert services.missing_media(session, current) == []
    assert count(session, FormAttachment) == 3


def test_publish_at_once_with_missing_media_stores_nothing(session, project_id):
    upload = xlsx_upload(workbooks.text("household.md"), "household.xlsx")
    with pytest.raises(errors.MissingMedia):
        services.create_form(session, project_id, upload, publish=True)
    assert count(session, Form) == 0 and count(session, FormVersion) == 0


def test_states_and_their_audit(session, project_id):
    form = services.create_form(
        session, project_id, xlsx_upload(workbooks.simple("1")), publish=True
    )
    services.set_state(session, form, "closing")
    assert session.get(Form, form.id).state == "closing"
    services.set_state(session, form, "closed")
    with pytest.raises(errors.UnexpectedValue):
        services.set_state(session, form, "archived")
    assert session.get(Form, form.id).state == "closed"
    assert actions(session)[-2:] == ["form.update.state", "form.update.state"]


def test_deleting_a_draft(session, project_id):
    published = services.create_form(
        session, project_id, xlsx_upload(workbooks.simple("1")), publish=True
    )
    services.set_draft(session, published)
    services.delete_draft(session, published)
    assert published.draft_version_id is None
    assert services.current_version(session, published) is not None
    with pytest.raises(errors.NotFound):
        services.delete_draft(session, published)
    never = services.create_form(
        session, project_id, xlsx_upload(workbooks.simple("1", form_id="jamais"))
    )
    services.delete_draft(session, never)
    assert services.find_form(session, project_id, "jamais") is None


class TestWithOdkValidate:
    """The same server with MERIT_ODK_VALIDATE on (what production runs)."""

    @pytest.fixture
    def app_overrides(self):
        return {"ODK_VALIDATE": True}

    def test_odk_validate_verdict_is_kept_with_the_version(self, session, project_id):
        form = services.create_form(session, project_id, xlsx_upload(workbooks.simple("1")))
        draft = services.draft_version(session, form)
        if compiler.java_available():
            assert draft.validation == "passed"
        else:
            assert draft.validation == "skipped" and "Java" in draft.validation_messages[0]
