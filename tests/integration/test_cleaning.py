"""The cleaning log: corrections checked line by line, applied in exports, revoked, audited.

Every test runs on SQLite and PostgreSQL, on the follow-up form of tests/support/exports.py.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from server import db, errors
from server.audit.models import AuditEvent
from server.exports import cleaning, services
from server.exports.models import Correction
from tests.support import exports as X


@pytest.fixture
def suivi(app):
    with app.app_context(), db.database().session() as db_session:
        yield X.build_suivi(db_session)


def submit(
    suivi, text: str, *, partial: bool = False, may_touch_pii: bool = True, encoding="utf-8"
):
    with db.database().session() as db_session, force_locale("en"):
        form = db_session.merge(suivi.form)
        return cleaning.submit(
            db_session,
            form,
            services.load_layout(db_session, form),
            text.encode(encoding),
            actor_id=suivi.submitter_id,
            partial=partial,
            may_touch_pii=may_touch_pii,
        )


def refused(suivi, text: str, **kwargs) -> dict[int, list[str]]:
    """Return the problems of each refused line (the upload must be refused as a whole)."""
    with pytest.raises(errors.CorrectionsRefused) as raised:
        submit(suivi, text, **kwargs)
    return {line["line"]: line["problems"] for line in raised.value.details["refused"]}


def main_rows(app, suivi, params=None):
    return {r["KEY"]: r for r in X.as_dicts(X.csv_rows(X.export(app, suivi.form, "csv", params)))}


def member_rows(app, suivi, params=None):
    tables = X.zip_tables(X.export(app, suivi.form, "csv.zip", params))
    return {r["KEY"]: r for r in X.as_dicts(tables["suivi-member.csv"])}


def corrections_count() -> int:
    with db.database().session(readonly=True) as db_session:
        return db_session.scalar(sa.select(sa.func.count()).select_from(Correction))


def test_round_trip_upload_export_cleaned_and_raw_then_revoke(app, suivi):
    a, c = suivi.ids["a"], suivi.ids["c"]
    fanta = f"{a}/household[1]/member[1]"
    result = submit(
        suivi,
        "KEY,column,old value,new value,reason\n"
        f"{a},respondent-age,034,35,birth certificate seen\n"
        f"{fanta},member_age,12,13,school register\n"
        f"{a},location-Latitude,12.6392,12.64,GPS drift\n"
        f"{a},/data/needs,water food,water,food given twice by mistake\n"
        f"{c},consent,no,yes,signed consent form found\n",
    )
    assert result.batch and len(result.accepted) == 5 and result.refused == []
    body = result.to_json()
    assert body["applied"] == 5 and body["accepted"][0]["KEY"] == a
    cleaned, raw = main_rows(app, suivi), main_rows(app, suivi, {"cleaned": "false"})
    assert (cleaned[a]["respondent-age"], raw[a]["respondent-age"]) == ("35", "34")
    assert (cleaned[a]["location-Latitude"], raw[a]["location-Latitude"]) == ("12.64", "12.6392")
    assert cleaned[a]["location-Longitude"] == "-8.0029"  # the other parts untouched
    assert (cleaned[a]["needs"], raw[a]["needs"]) == ("water", "water food")
    assert (cleaned[c]["consent"], raw[c]["consent"]) == ("yes", "no")
    assert member_rows(app, suivi)[fanta]["member_age"] == "13"
    assert member_rows(app, suivi, {"cleaned": "false"})[fanta]["member_age"] == "12"
    # Excel gets the corrected values typed.
    with db.database().session(readonly=True) as db_session:
        listed = cleaning.list_corrections(db_session, db_session.merge(suivi.form))
        assert [(x.key, x.column) for x in listed] == [
            (a, "/data/respondent/age"),
            (fanta, "/data/household/member/member_age"),
            (a, "/data/location#Latitude"),
            (a, "/data/needs"),
            (c, "/data/consent"),
        ]
        assert {x.batch for x in listed} == {result.batch}
        assert {x.actor_id for x in listed} == {suivi.submitter_id}
        first = listed[0].id
    with db.database().session() as db_session:
        form = db_session.merge(suivi.form)
        revoked = cleaning.revoke(db_session, form, first, actor_id=suivi.submitter_id)
        assert revoked.revoked_at is not None
    assert main_rows(app, suivi)[a]["respondent-age"] == "34"
    assert main_rows(app, suivi)[a]["needs"] == "water"  # the others still apply
    with db.database().session(readonly=True) as db_session:
        actions = db_session.execute(
            sa.select(AuditEvent.action, AuditEvent.details).where(
                AuditEvent.action.like("export.corrections.%")
            )
        ).all()
        assert [x[0] for x in actions] == ["export.corrections.create", "export.corrections.delete"]
        assert actions[0][1] == {"batch": result.batch, "accepted": 5, "refused": 0}
        assert actions[1][1]["id"] == first
        form = db_session.merge(suivi.form)
        assert len(cleaning.list_corrections(db_session, form)) == 4
        assert len(cleaning.list_corrections(db_session, form, include_revoked=True)) == 5


def test_every_bad_line_is_refused_with_its_reason_and_nothing_is_applied(app, suivi):
    a = suivi.ids["a"]
    problems = refused(
        suivi,
        "KEY,column,old value,new value,reason\n"
        f"{a},respondent-age,34,35,ok\n"  # 2: valid
        "uuid:nope,respondent-age,34,35,typo\n"  # 3
        f"{a}/household[5],head,Awa,Aïssa,typo\n"  # 4
        f"{a},no_such_column,1,2,typo\n"  # 5
        f"{a},SubmitterName,Tablette Ségou,X,typo\n"  # 6
        f"{a},needs/water,1,0,typo\n"  # 7
        f"{a},income,13,14,typo\n"  # 8: old value is 12.50
        f"{a}/household[1]/member[2],member_age,9,neuf,typo\n"  # 9
        f"{a}/household[1]/member[2],sex,m,x,typo\n"  # 10
        f"{a},respondent-visit_date,2024-05-07,07/05/2024,typo\n"  # 11
        f"{a},enumerator,Moussa Diarra,Moussa,\n"  # 12: no reason
        f"{a},respondent-age,34,36,again\n"  # 13: same cell as line 2
        f"{a},photo,a.jpg,a.jpg,same\n",  # 14
    )
    assert sorted(problems) == list(range(3, 15))
    assert "uuid:nope" in problems[3][0]
    assert f"{a}/household[5]" in problems[4][0]
    assert "no_such_column" in problems[5][0]
    assert "metadata" in problems[6][0]
    assert "select-multiple" in problems[7][0]
    assert "12.50" in problems[8][0]
    assert "whole number" in problems[9][0]
    assert "“x” is not one of the choices (f, m)" in problems[10][0]
    assert "YYYY-MM-DD" in problems[11][0]
    assert "reason" in problems[12][0]
    assert "line 2" in problems[13][0]
    assert "already exported" in problems[14][0]
    assert corrections_count() == 0


def test_partial_applies_the_valid_lines_and_reports_the_others(app, suivi):
    a = suivi.ids["a"]
    result = submit(
        suivi,
        "KEY,column,old value,new value,reason\n"
        f"{a},respondent-age,34,35,ok\n"
        f"{a},respondent-age~,34,35,typo\n",
        partial=True,
    )
    assert [x.line for x in result.accepted] == [2]
    assert [x.line for x in result.refused] == [3]
    assert result.to_json()["refused"][0]["problems"]
    assert corrections_count() == 1
    assert main_rows(app, suivi)[a]["respondent-age"] == "35"


def test_french_headers_semicolons_and_windows_encoding(app, suivi):
    a = suivi.ids["a"]
    text = (
        "Clé;Colonne;Ancienne valeur;Nouvelle valeur;Motif\n"
        f"{a};enumerator;Moussa Diarra;Moussa Diarra Keïta;nom complet\n"
    )
    result = submit(suivi, text, encoding="cp1252")
    assert len(result.accepted) == 1
    assert main_rows(app, suivi)[a]["enumerator"] == "Moussa Diarra Keïta"


def test_unreadable_uploads_are_refused_whole(app, suivi):
    for text in ("", "KEY,column\nx,y\n", "KEY,column,old value,new value,reason\n"):
        with pytest.raises(errors.UnreadableCorrections):
            submit(suivi, text)


def test_personal_fields_need_the_right_to_see_them(app, suivi):
    a = suivi.ids["a"]
    problems = refused(
        suivi,
        f"KEY,column,old value,new value,reason\n{a},respondent-name,Awa Traoré,Awa,typo\n",
        may_touch_pii=False,
    )
    assert "personal data" in problems[2][0]


def test_a_correction_stops_applying_once_the_record_is_edited_on_a_tablet(app, suivi):
    c = suivi.ids["c"]
    submit(suivi, f"KEY,column,old value,new value,reason\n{c},respondent-age,41,42,typo\n")
    assert main_rows(app, suivi)[c]["respondent-age"] == "42"
    with db.database().session() as db_session:
        edit = X.record_xml(
            X.new_id(),
            X.answers("Ibrahim", name="Mariam", age="43", consent="no"),
            version="3",
            deprecated_id=c,
            instance_name="Ibrahim",
        )
        X.receive(db_session, suivi.project_id, edit)
    # The tablet's new answer wins; the correction no longer matches its old value.
    assert main_rows(app, suivi)[c]["respondent-age"] == "43"


def test_corrections_chain_on_the_same_cell(app, suivi):
    a = suivi.ids["a"]
    submit(suivi, f"KEY,column,old value,new value,reason\n{a},income,12.5,13,first\n")
    problems = refused(
        suivi, f"KEY,column,old value,new value,reason\n{a},income,12.50,14,stale old value\n"
    )
    assert "13" in problems[2][0]
    submit(suivi, f"KEY,column,old value,new value,reason\n{a},income,13,14,second\n")
    assert main_rows(app, suivi)[a]["income"] == "14"


def test_an_old_value_copied_from_a_csv_keeps_its_formula_guard_and_still_matches(app, suivi):
    a = suivi.ids["a"]
    before = main_rows(app, suivi)[a]["enumerator"]
    phone = "+223 76 00 00 00"  # a phone number in a text field: Excel would compute it
    submit(suivi, f"KEY,column,old value,new value,reason\n{a},enumerator,{before},{phone},x\n")
    assert main_rows(app, suivi)[a]["enumerator"] == "'" + phone
    assert main_rows(app, suivi, {"escapeFormulas": "false"})[a]["enumerator"] == phone
    # The analyst copies the cell as the CSV shows it, with its quote: it names the answer.
    result = submit(
        suivi, f"KEY,column,old value,new value,reason\n{a},enumerator,'{phone},Awa,y\n"
    )
    assert result.accepted[0].old == phone
    assert main_rows(app, suivi)[a]["enumerator"] == "Awa"
