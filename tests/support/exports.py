"""Forms and records for the export tests: XLSForms in Markdown, published through the forms
service in several versions, and records built as ODK Collect writes them, sent through intake.

``SUIVI_V1`` to ``SUIVI_V3`` are three versions of one follow-up form, with groups, nested
repeats (households and their members), a select-multiple, a geopoint and a geotrace,
French and English labels and a personal field. Version 2 removes ``old_note``, adds
``consent``, the choice ``shelter`` and the member question ``school``; version 3 removes the
choice ``food`` and the member question ``school`` again.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
import zipfile
from typing import Any
from xml.sax.saxutils import escape

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import db
from server.exports import services
from server.exports.options import ExportOptions, parse_options
from server.forms import services as forms
from server.forms.models import Form
from server.submissions import intake
from server.submissions.models import Submission
from tests.fixtures.forms import workbooks

_SURVEY_HEAD = (
    "| survey |\n"
    "| | type | name | label::Français (fr) | label::English (en) | pii | calculation |\n"
)


def _suivi(version: str, *, old_note: bool, consent: bool, school: bool, food: bool) -> str:
    rows = [
        "| | start | start | | | | |",
        "| | audit | audit | | | | |",
        "| | text | enumerator | Enquêteur | Enumerator | | |",
        "| | begin group | respondent | Répondant | Respondent | | |",
        "| | text | name | Nom | Name | yes | |",
        "| | integer | age | Âge | Age | | |",
        "| | date | visit_date | Date de visite | Visit date | | |",
        "| | end group | | | | | |",
        "| | decimal | income | Revenu | Income | | |",
        "| | dateTime | visited_at | Heure de visite | Visit time | | |",
        "| | acknowledge | agreed | D'accord ? | Agreed? | | |",
        "| | select_multiple needs | needs | Besoins | Needs | | |",
        "| | geopoint | location | Position | Location | | |",
    ]
    if old_note:
        rows.append("| | text | old_note | Ancienne note | Old note | | |")
    if consent:
        rows.append("| | select_one yes_no | consent | Consentement | Consent | | |")
    rows += [
        "| | begin repeat | household | Ménage | Household | | |",
        "| | text | head | Chef de ménage | Head of household | yes | |",
        "| | begin repeat | member | Membre | Member | | |",
        "| | text | member_name | Nom du membre | Member's name | | |",
        "| | integer | member_age | Âge du membre | Member's age | | |",
        "| | select_one sex | sex | Sexe | Sex | | |",
    ]
    if school:
        rows.append("| | select_one yes_no | school | Scolarisé | In school | | |")
    rows += [
        "| | end repeat | | | | | |",
        "| | end repeat | | | | | |",
        "| | image | photo | Photo | Photo | | |",
        "| | geotrace | path | Trajet | Path | | |",
        "| | calculate | member_count | | | | count(${member}) |",
    ]
    choices = [
        "| choices |",
        "| | list_name | name | label::Français (fr) | label::English (en) |",
        "| | needs | water | Eau | Water |",
    ]
    if food:
        choices.append("| | needs | food | Nourriture | Food |")
    if consent or school:
        choices.append("| | needs | shelter | Abri | Shelter |")
    choices += [
        "| | sex | f | Féminin | Female |",
        "| | sex | m | Masculin | Male |",
        "| | yes_no | yes | Oui | Yes |",
        "| | yes_no | no | Non | No |",
    ]
    settings = [
        "| settings |",
        "| | form_id | version | form_title | default_language | instance_name |",
        f"| | suivi | {version} | Suivi des ménages | Français (fr) | concat(${{enumerator}}) |",
    ]
    return _SURVEY_HEAD + "\n".join(rows + choices + settings) + "\n"


SUIVI_V1 = _suivi("1", old_note=True, consent=False, school=False, food=True)
SUIVI_V2 = _suivi("2", old_note=False, consent=True, school=True, food=True)
SUIVI_V3 = _suivi("3", old_note=False, consent=True, school=False, food=False)


def upload(markdown: str, filename: str = "suivi.xlsx") -> forms.Upload:
    """Return a forms-service upload of a Markdown XLSForm."""
    return forms.Upload(
        data=workbooks.xlsx(markdown), filename=filename, content_type=workbooks.XLSX_TYPE
    )


def publish(db_session: Session, project_id: int, markdown: str) -> Form:
    """Publish a new form from a Markdown XLSForm."""
    return forms.create_form(
        db_session, project_id, upload(markdown), publish=True, ignore_warnings=True
    )


def publish_version(db_session: Session, form: Form, markdown: str) -> Form:
    """Publish a new version of a form from a Markdown XLSForm."""
    forms.set_draft(db_session, form, upload(markdown), ignore_warnings=True)
    forms.publish_draft(db_session, form)
    db_session.refresh(form)
    return form


def new_id() -> str:
    return f"uuid:{uuid.uuid4()}"


def _xml(name: str, value: Any) -> str:
    if isinstance(value, list):
        return "".join(_xml(name, item) for item in value)
    if isinstance(value, dict):
        inner = "".join(_xml(k, v) for k, v in value.items())
        return f"<{name}>{inner}</{name}>"
    if value is None:
        return f"<{name}/>"
    return f"<{name}>{escape(str(value))}</{name}>"


def record_xml(
    instance_id: str,
    values: dict[str, Any],
    *,
    form_id: str = "suivi",
    version: str = "1",
    deprecated_id: str | None = None,
    instance_name: str | None = None,
    audit: str | None = None,
) -> bytes:
    """Return a record as Collect writes it: answers in form order, then meta.

    Groups are dicts, repeats lists of dicts, empty answers None.
    """
    body = "".join(_xml(k, v) for k, v in values.items())
    deprecated = f"<deprecatedID>{deprecated_id}</deprecatedID>" if deprecated_id else ""
    name = f"<instanceName>{escape(instance_name)}</instanceName>" if instance_name else ""
    audit_xml = f"<audit>{escape(audit)}</audit>" if audit else "<audit/>"
    return (
        f'<?xml version="1.0" ?><data xmlns:jr="http://openrosa.org/javarosa" '
        f'xmlns:orx="http://openrosa.org/xforms" id="{form_id}" version="{version}">'
        f"{body}<meta>{audit_xml}<instanceID>{instance_id}</instanceID>{name}{deprecated}"
        "</meta></data>"
    ).encode()


def receive(
    db_session: Session,
    project_id: int,
    xml: bytes,
    files: dict[str, bytes] | None = None,
    *,
    actor_id: int | None = None,
    draft: bool = False,
) -> intake.Receipt:
    """Send a record through intake, as the OpenRosa endpoint does."""
    return intake.receive(
        db_session,
        project_id=project_id,
        xml=xml,
        files=[
            intake.IncomingFile(name, io.BytesIO(content))
            for name, content in (files or {}).items()
        ],
        actor_id=actor_id,
        device_id="collect:TESTDEVICE",
        draft=draft,
    )


def set_review_state(db_session: Session, instance_id: str, state: str | None) -> None:
    """Set a record's review state (the review API is not this package's)."""
    db_session.execute(
        sa.update(Submission)
        .where(Submission.instance_id == instance_id)
        .values(review_state=state)
    )
    db_session.commit()


def export(app, form: Form, fmt: str, params: dict[str, str] | None = None, **kwargs) -> bytes:
    """Run an export through the service with a read-only session; return its bytes."""
    prepared = prepare(app, form, fmt, params, **kwargs)
    return b"".join(prepared.chunks)


def prepare(app, form: Form, fmt: str, params: dict[str, str] | None = None, **kwargs):
    """Prepare an export (options from query-style ``params``); consume ``.chunks`` in ctx."""
    options = parse_options(params or {}, base=ExportOptions(pii=kwargs.pop("pii", "plain")))
    reader = db.database().read_sessionmaker()
    return services.prepare(
        reader, form, fmt, options, secret_key=app.config["SECRET_KEY"], **kwargs
    )


def csv_rows(data: bytes) -> list[list[str]]:
    """Parse CSV bytes (a BOM, if any, is kept on the first cell)."""
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def zip_tables(data: bytes) -> dict[str, list[list[str]]]:
    """Return every CSV of an export zip, parsed, by file name."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    return {
        name: csv_rows(archive.read(name)) for name in archive.namelist() if name.endswith(".csv")
    }


def as_dicts(rows: list[list[str]]) -> list[dict[str, str]]:
    """Turn parsed CSV rows into dicts by header."""
    header, *body = rows
    return [dict(zip(header, row, strict=True)) for row in body]


def geojson(data: bytes) -> dict[str, Any]:
    return json.loads(data)


AUDIT_LOG = (
    b"event,node,start,end\n"
    b"form start,,1715090512345,\n"
    b"question,/data/enumerator,1715090513000,1715090514000\n"
)
PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"


def household(head: str, *members: tuple[str, str, str] | tuple[str, str, str, str]) -> dict:
    """A household instance with its members (name, age, sex[, school])."""
    rows = []
    for member in members:
        row = {"member_name": member[0], "member_age": member[1], "sex": member[2]}
        if len(member) > 3:
            row["school"] = member[3]
        rows.append(row)
    return {"head": head, "member": rows}


def answers(
    enumerator: str,
    *,
    name: str | None = None,
    age: str | None = None,
    visit_date: str | None = None,
    income: str | None = None,
    visited_at: str | None = None,
    agreed: str | None = None,
    needs: str | None = None,
    location: str | None = None,
    old_note: Any = "absent",
    consent: Any = "absent",
    households: list[dict] | None = None,
    photo: str | None = None,
    path: str | None = None,
    member_count: str | None = None,
) -> dict[str, Any]:
    """The answers of a follow-up record, in form order (absent questions are left out)."""
    values: dict[str, Any] = {
        "start": "2024-05-07T13:58:00.000+02:00",
        "enumerator": enumerator,
        "respondent": {"name": name, "age": age, "visit_date": visit_date},
        "income": income,
        "visited_at": visited_at,
        "agreed": agreed,
        "needs": needs,
        "location": location,
    }
    if old_note != "absent":
        values["old_note"] = old_note
    if consent != "absent":
        values["consent"] = consent
    values["household"] = households or []
    values["photo"] = photo
    values["path"] = path
    values["member_count"] = member_count
    return values


class Suivi:
    """The follow-up form with records of every kind an export must handle (see build_suivi)."""

    form: Form
    project_id: int
    submitter_id: int
    ids: dict[str, str]


def build_suivi(db_session: Session) -> Suivi:
    """Publish the three versions of ``suivi`` and send records through intake.

    * ``a`` (v1): everything answered, untrimmed; two households, three members; a photo and
      a client audit log;
    * ``b`` (v1) then edited on v2: only the edit is exported (Edits 1, ReviewState edited);
    * ``c`` (v2): a member in school, the new choice ``shelter``;
    * ``d`` (v2): rejected: left out unless asked for;
    * ``e`` (v3): sent twice (a retry): one row;
    * ``f`` (v3): deleted: never exported; ``g``: sent to the draft: never exported.
    """
    from tests.support import factories

    suivi = Suivi()
    project = factories.project(db_session)
    app_user, _token = factories.app_user(db_session, project.id, "Tablette Ségou")
    suivi.project_id = project.id
    suivi.submitter_id = app_user.actor_id
    form = publish(db_session, project.id, SUIVI_V1)
    ids = {key: new_id() for key in "abcdefg"}
    ids["b2"] = new_id()

    def send(key: str, values: dict[str, Any], version: str, files=None, **kw: Any) -> None:
        xml = record_xml(
            ids[key], values, version=version, instance_name=values["enumerator"].strip(), **kw
        )
        receive(db_session, project.id, xml, files, actor_id=app_user.actor_id)

    send(
        "a",
        answers(
            "  Moussa Diarra ",
            name="Awa Traoré",
            age="034",
            visit_date="2024-05-07",
            income=" 12.50 ",
            visited_at="2024-05-07T14:01:55.123+02:00",
            agreed="OK",
            needs="water  food",
            location="12.6392 -8.0029 350.5 4.8",
            old_note="écrit à la main",
            households=[
                household("Awa", ("Fanta", "12", "f"), ("Oumar", "9", "m")),
                household("Issa", ("Binta", "40", "f")),
            ],
            photo="a.jpg",
            path="12.6 -8.0 0 0;12.7 -8.1 0 0",
            member_count="3",
        ),
        "1",
        {"a.jpg": PHOTO, "audit.csv": AUDIT_LOG},
        audit="audit.csv",
    )
    send("b", answers("Sali", name="Kadi", age="25", old_note=None), "1")
    publish_version(db_session, form, SUIVI_V2)
    xml = record_xml(
        ids["b2"],
        answers("Sali Koné", name="Kadiatou", age="26", consent="yes"),
        version="2",
        deprecated_id=ids["b"],
        instance_name="Sali Koné",
    )
    receive(db_session, project.id, xml, actor_id=app_user.actor_id)
    send(
        "c",
        answers(
            "Ibrahim",
            name="Mariam",
            age="41",
            needs="shelter",
            location="14.35 -3.6 280 12",
            consent="no",
            households=[household("Mariam", ("Ali", "8", "m", "yes"))],
        ),
        "2",
    )
    send("d", answers("Rejeté", name="X", age="1", consent="no"), "2")
    set_review_state(db_session, ids["d"], "rejected")
    publish_version(db_session, form, SUIVI_V3)
    retry = answers("Awa Sow", name="Nana", age="30", needs="water", consent="yes")
    send("e", retry, "3")
    send("e", retry, "3")
    send("f", answers("Effacé", name="Y", age="2", consent="no"), "3")
    db_session.execute(
        sa.update(Submission)
        .where(Submission.instance_id == ids["f"])
        .values(deleted_at=sa.func.now())
    )
    db_session.commit()
    forms.set_draft(db_session, form)
    draft_xml = record_xml(ids["g"], answers("Brouillon", consent="no"), version="3")
    receive(db_session, project.id, draft_xml, draft=True)
    db_session.refresh(form)
    db_session.commit()  # end the transaction: on SQLite it would hold the write lock
    suivi.form = form
    suivi.ids = ids
    return suivi


def bulk_records(db_session: Session, form: Form, count: int, *, households: int = 1) -> None:
    """Insert ``count`` records of the follow-up form straight into the tables (fast)."""
    from server.db import utcnow
    from server.forms.models import FormVersion
    from server.submissions.models import SubmissionVersion

    version_id = db_session.scalar(
        sa.select(FormVersion.id).where(FormVersion.form_id == form.id).order_by(FormVersion.id)
    )
    now = utcnow()
    ids = [new_id() for _ in range(count)]
    db_session.execute(
        sa.insert(Submission),
        [{"form_id": form.id, "draft": False, "instance_id": i, "created_at": now} for i in ids],
    )
    rows = dict(
        db_session.execute(
            sa.select(Submission.instance_id, Submission.id).where(Submission.form_id == form.id)
        ).all()
    )
    versions = []
    for number, instance_id in enumerate(ids):
        document = answers(
            f"Enquêteur {number}",
            name=f"Personne {number}",
            age=str(number % 90),
            needs="water",
            location="12.6 -8.0 300 5",
            households=[
                household(f"Chef {number}.{h}", ("Membre", str(h), "f")) for h in range(households)
            ],
        )
        document["meta"] = {"instanceID": instance_id}
        versions.append(
            {
                "submission_id": rows[instance_id],
                "form_id": form.id,
                "draft": False,
                "form_version_id": version_id,
                "instance_id": instance_id,
                "current": True,
                "xml": "<data/>",
                "xml_sha256": "0" * 64,
                "document": document,
                "created_at": now,
            }
        )
    db_session.execute(sa.insert(SubmissionVersion.__table__), versions)  # column names
    db_session.commit()
