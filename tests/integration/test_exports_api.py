"""Exports and the cleaning log over HTTP, at ODK Central's URLs, with roles and streaming.

Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import re
import zipfile

import openpyxl
import pandas as pd
import pytest
import sqlalchemy as sa

from server import db
from server.audit.models import AuditEvent
from tests.support import collect_crypto, factories
from tests.support import exports as X


@pytest.fixture
def suivi(app):
    with app.app_context(), db.database().session() as db_session:
        built = X.build_suivi(db_session)
        for email, role in (
            ("coord@example.org", "manager"),
            ("analyste@example.org", "viewer"),
            ("enqueteur@example.org", "formfill"),
        ):
            factories.user(db_session, email, role=role, project_id=built.project_id)
        yield built


def login(client, email: str) -> dict[str, str]:
    answer = client.post("/v1/sessions", json={"email": email, "password": factories.PASSWORD})
    return {"Authorization": f"Bearer {answer.json['token']}"}


def url(suivi, suffix: str) -> str:
    return f"/v1/projects/{suivi.project_id}/forms/suivi/{suffix}"


def test_a_coordinator_downloads_the_zip_streamed_with_centrals_name(client, suivi):
    response = client.get(
        url(suivi, "submissions.csv.zip"), headers=login(client, "coord@example.org")
    )
    assert response.status_code == 200
    assert response.is_streamed
    assert response.content_type == "application/zip"
    assert response.headers["Content-Disposition"].startswith(
        'attachment; filename="suivi.csv.zip"'
    )
    assert response.headers["Cache-Control"] == "private, no-store"
    assert response.headers["X-Accel-Buffering"] == "no"
    tables = X.zip_tables(response.data)
    names = [r["respondent-name"] for r in X.as_dicts(tables["suivi.csv"])]
    assert names == ["Awa Traoré", "Kadiatou", "Mariam", "Nana"]  # managers see personal data


def test_every_export_is_in_the_audit_log_with_its_options(client, suivi):
    headers = login(client, "analyste@example.org")
    response = client.get(
        url(suivi, "submissions.xlsx?headers=labels&language=en&reviewState=approved"),
        headers=headers,
    )
    assert response.status_code == 200
    with db.database().session(readonly=True) as db_session:
        event = db_session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "submission.export")
        ).one()
        assert event.form_id == suivi.form.id and event.actor_id is not None
        assert event.details == {
            "xmlFormId": "suivi",
            "format": "xlsx",
            "options": {
                "headers": "labels",
                "language": "en",
                "review_states": ["approved"],
                "pii": "pseudonymise",
            },
            "via": "api",
        }


def test_analysts_get_pseudonyms_and_may_not_ask_for_personal_data(client, suivi):
    headers = login(client, "analyste@example.org")
    rows = X.as_dicts(X.csv_rows(client.get(url(suivi, "submissions.csv"), headers=headers).data))
    assert all(r["respondent-name"].startswith("pid_") for r in rows)
    refused = client.get(url(suivi, "submissions.csv?pii=plain"), headers=headers)
    assert refused.status_code == 403 and refused.json["code"] == 403.1
    omitted = client.get(url(suivi, "submissions.csv?pii=omit"), headers=headers)
    assert "respondent-name" not in X.csv_rows(omitted.data)[0]


def test_who_may_export(client, suivi):
    assert client.get(url(suivi, "submissions.csv")).status_code == 401
    collector = login(client, "enqueteur@example.org")
    assert client.get(url(suivi, "submissions.csv"), headers=collector).status_code == 403
    coordinator = login(client, "coord@example.org")
    missing = client.get(
        f"/v1/projects/{suivi.project_id}/forms/nothing/submissions.csv.zip", headers=coordinator
    )
    assert missing.status_code == 404 and missing.json["code"] == 404.1


def test_bad_options_are_400_with_the_parameter_named(client, suivi):
    headers = login(client, "coord@example.org")
    bad_filter = client.get(
        url(suivi, "submissions.csv?$filter=__system/reviewState%20eq"), headers=headers
    )
    assert bad_filter.status_code == 400 and bad_filter.json["code"] == 400.18  # as Central
    for query, field in (
        ("reviewState=approuve", "reviewState"),
        ("start=hier", "start"),
        ("fields=nothing", "fields"),
        ("headers=labels&language=bambara", "language"),
        ("splitSelectMultiples=maybe", "splitSelectMultiples"),
    ):
        response = client.get(url(suivi, f"submissions.csv?{query}"), headers=headers)
        assert response.status_code == 400, query
        assert response.json["code"] == 400.8
        assert response.json["details"]["field"] == field


def test_gzip_when_the_client_accepts_it_and_never_on_zips(client, suivi):
    headers = login(client, "coord@example.org")
    plain = client.get(url(suivi, "submissions.csv"), headers=headers).data
    zipped = client.get(
        url(suivi, "submissions.csv"), headers={**headers, "Accept-Encoding": "gzip, deflate"}
    )
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(zipped.data) == plain
    geo = client.get(
        url(suivi, "submissions.geojson"), headers={**headers, "Accept-Encoding": "gzip"}
    )
    assert geo.content_type == "application/geo+json"
    assert b'"FeatureCollection"' in gzip.decompress(geo.data)
    archive = client.get(
        url(suivi, "submissions.csv.zip"), headers={**headers, "Accept-Encoding": "gzip"}
    )
    assert "Content-Encoding" not in archive.headers
    assert zipfile.ZipFile(io.BytesIO(archive.data)).namelist()[0] == "suivi.csv"


def test_post_takes_options_in_the_body_as_central(client, suivi):
    headers = login(client, "coord@example.org")
    response = client.post(
        url(suivi, "submissions.csv.zip"),
        data={"attachments": "false", "splitSelectMultiples": "true"},
        headers=headers,
    )
    assert response.status_code == 200
    tables = X.zip_tables(response.data)
    assert list(tables) == ["suivi.csv", "suivi-household.csv", "suivi-member.csv"]
    assert "needs/water" in tables["suivi.csv"][0]
    media = client.post(url(suivi, "submissions.media.zip"), json={}, headers=headers)
    assert zipfile.ZipFile(io.BytesIO(media.data)).read("media/a.jpg") == X.PHOTO


def test_the_cleaning_log_over_http(client, suivi):
    analyst = login(client, "analyste@example.org")
    a = suivi.ids["a"]
    good = f"KEY,column,old value,new value,reason\n{a},respondent-age,34,35,birth certificate\n"
    uploaded = client.post(
        url(suivi, "corrections"),
        data=good.encode(),
        headers={**analyst, "Content-Type": "text/csv"},
    )
    assert uploaded.status_code == 200, uploaded.json
    assert uploaded.json["applied"] == 1 and uploaded.json["refused"] == []
    bad = f"KEY,column,old value,new value,reason\n{a},respondent-age,99,35,wrong old value\n"
    refused = client.post(
        url(suivi, "corrections"),
        data=bad.encode(),
        headers={**analyst, "Content-Type": "text/csv"},
    )
    assert refused.status_code == 400 and refused.json["code"] == 400.41
    assert refused.json["details"]["refused"][0]["line"] == 2
    assert refused.json["details"]["refused"][0]["problems"]
    as_file = client.post(
        url(suivi, "corrections?partial=true"),
        data={"file": (io.BytesIO(bad.encode() + good.encode().split(b"\n", 1)[1]), "log.csv")},
        headers=analyst,
        content_type="multipart/form-data",
    )
    assert as_file.status_code == 400  # the "good" line is stale now: 34 became 35
    listed = client.get(url(suivi, "corrections"), headers=analyst).json
    assert [(c["KEY"], c["column"], c["oldValue"], c["newValue"]) for c in listed] == [
        (a, "respondent-age", "34", "35")
    ]
    rows = X.as_dicts(X.csv_rows(client.get(url(suivi, "submissions.csv"), headers=analyst).data))
    assert rows[0]["respondent-age"] == "35"
    raw = client.get(url(suivi, "submissions.csv?cleaned=false"), headers=analyst)
    assert X.as_dicts(X.csv_rows(raw.data))[0]["respondent-age"] == "34"
    collector = login(client, "enqueteur@example.org")
    assert client.post(url(suivi, "corrections"), data=good, headers=collector).status_code == 403
    revoked = client.delete(url(suivi, f"corrections/{listed[0]['id']}"), headers=analyst)
    assert revoked.status_code == 200 and revoked.json["revokedAt"]
    assert client.get(url(suivi, "corrections"), headers=analyst).json == []
    everything = client.get(url(suivi, "corrections?revoked=true"), headers=analyst).json
    assert len(everything) == 1
    assert client.delete(url(suivi, "corrections/999999"), headers=analyst).status_code == 404
    rows = X.as_dicts(X.csv_rows(client.get(url(suivi, "submissions.csv"), headers=analyst).data))
    assert rows[0]["respondent-age"] == "34"


SECRET_FORM = """
| survey |
|        | type | name | label |
|        | text | nom  | Nom   |
|        | integer | age | Âge |
| settings |
|          | form_id | version | form_title | public_key |
|          | secret  | 1       | Secret     | {public}   |
"""


def test_encrypted_records_are_listed_not_decrypted_unless_the_key_is_given(client, app, suivi):
    pem, public = collect_crypto.generate_key_pair()
    instance_id = X.new_id()
    with db.database().session() as db_session:
        X.publish(db_session, suivi.project_id, SECRET_FORM.format(public=public))
        xml = X.record_xml(instance_id, {"nom": " Moussa Diarra ", "age": "051"}, form_id="secret")
        sent = collect_crypto.encrypt_submission(
            public, xml, [], form_id="secret", version="1", instance_id=instance_id
        )
        X.receive(db_session, suivi.project_id, sent.envelope, sent.files)
    headers = login(client, "coord@example.org")
    locked = X.as_dicts(
        X.csv_rows(client.get(f"/v1/projects/{suivi.project_id}/forms/secret/submissions.csv",
                              headers=headers).data)
    )  # fmt: skip
    assert [(r["KEY"], r["Status"], r["nom"], r["age"]) for r in locked] == [
        (instance_id, "not decrypted", "", "")
    ]
    opened = client.post(
        f"/v1/projects/{suivi.project_id}/forms/secret/submissions.csv",
        data={"privateKey": pem.decode()},
        headers=headers,
    )
    assert opened.status_code == 200
    rows = X.as_dicts(X.csv_rows(opened.data))
    assert [(r["KEY"], r["Status"], r["nom"], r["age"]) for r in rows] == [
        (instance_id, "", "Moussa Diarra", "51")
    ]
    # An analyst (no right to decrypt) may not try.
    analyst = login(client, "analyste@example.org")
    denied = client.post(
        f"/v1/projects/{suivi.project_id}/forms/secret/submissions.csv",
        data={"privateKey": pem.decode()},
        headers=analyst,
    )
    assert denied.status_code == 403


# ---- for analysts: choice labels, typed dates, the byte-order mark (issue 19) -----------------

BOM = "\ufeff".encode()


def test_choice_labels_in_a_language_read_back_with_pandas(client, suivi):
    headers = login(client, "coord@example.org")
    central = client.get(url(suivi, "submissions.csv"), headers=headers)
    assert central.status_code == 200 and not central.data.startswith(BOM)
    # Absent or empty, the option changes nothing: Central's bytes.
    again = client.get(url(suivi, "submissions.csv?choiceLabels="), headers=headers)
    assert X.csv_rows(again.data)[1:] == X.csv_rows(central.data)[1:]
    labelled = client.get(url(suivi, "submissions.csv?choiceLabels=fr"), headers=headers)
    assert labelled.status_code == 200
    names = pd.read_csv(io.BytesIO(central.data), dtype=str, keep_default_na=False)
    labels = pd.read_csv(io.BytesIO(labelled.data), dtype=str, keep_default_na=False)
    assert labels["needs"].tolist() == ["Eau; Nourriture", "", "Abri", "Eau"]
    assert labels["consent"].tolist() == ["", "Oui", "Non", "Oui"]
    assert list(labels.columns) == list(names.columns)
    others = [c for c in names.columns if c not in ("needs", "consent", "SubmissionDate")]
    assert labels[others].equals(names[others])
    english = client.get(url(suivi, "submissions.csv.zip?choiceLabels=en"), headers=headers)
    members = pd.read_csv(io.BytesIO(zipfile.ZipFile(io.BytesIO(english.data)).read(
        "suivi-member.csv")), dtype=str, keep_default_na=False)  # fmt: skip
    assert members["sex"].tolist() == ["Female", "Male", "Female", "Male"]
    refused = client.get(url(suivi, "submissions.csv?choiceLabels=bambara"), headers=headers)
    assert refused.status_code == 400 and refused.json["details"]["field"] == "choiceLabels"


def test_analysts_asking_for_choice_labels_still_get_pseudonyms(client, suivi):
    # Personal answers stay pseudonyms whatever labels are asked (a personal select's too:
    # tests/unit/test_export_parts.py, test_choice_labels_in_a_language_...).
    headers = login(client, "analyste@example.org")
    answer = client.get(url(suivi, "submissions.csv?choiceLabels=fr"), headers=headers)
    frame = pd.read_csv(io.BytesIO(answer.data), dtype=str, keep_default_na=False)
    assert all(name.startswith("pid_") for name in frame["respondent-name"])
    assert frame["needs"].tolist()[0] == "Eau; Nourriture"


def test_xlsx_with_labels_types_every_date_and_time_for_openpyxl_and_pandas(client, suivi):
    headers = login(client, "coord@example.org")
    query = "choiceLabels=en&headers=labels&language=fr&splitSelectMultiples=true"
    answer = client.get(url(suivi, f"submissions.xlsx?{query}"), headers=headers)
    assert answer.status_code == 200
    workbook = openpyxl.load_workbook(io.BytesIO(answer.data), read_only=True)
    rows = list(workbook["suivi"].iter_rows(values_only=True))
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["Besoins"] == "Water; Food"  # French headers, English answers
    assert (first["Besoins/Eau"], first["Besoins/Abri"], first["Besoins/Nourriture"]) == (1, 0, 1)
    assert [h for h in rows[0] if str(h).startswith("Position-")] == [
        "Position-Latitude",
        "Position-Longitude",
        "Position-Altitude",
        "Position-Précision",
    ]
    assert isinstance(first["SubmissionDate"], dt.datetime)
    assert first["start"] == dt.datetime(2024, 5, 7, 13, 58)
    assert first["Heure de visite"] == dt.datetime(2024, 5, 7, 14, 1, 55, 123000)
    assert first["Répondant-Date de visite"] == dt.datetime(2024, 5, 7)
    members = list(workbook["member"].iter_rows(values_only=True))
    assert [row[2] for row in members[1:]] == ["Female", "Male", "Female", "Male"]
    sheet = pd.read_excel(io.BytesIO(answer.data), sheet_name="suivi")
    for column in ("SubmissionDate", "start", "Heure de visite", "Répondant-Date de visite"):
        assert pd.api.types.is_datetime64_any_dtype(sheet[column]), column
    assert sheet["Consentement"].fillna("").tolist() == ["", "Yes", "No", "Yes"]


def _console_sign_in(client, email: str) -> None:
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)[1]
    answer = client.post(
        "/login", data={"email": email, "password": factories.PASSWORD, "login_token": token}
    )
    assert answer.status_code == 303


def test_console_csv_starts_with_a_byte_order_mark_for_excel(client, suivi):
    _console_sign_in(client, "coord@example.org")
    base = f"/projects/{suivi.project_id}/forms/suivi/export"
    page = client.get(base).text
    assert re.search(r'name="bom" value="1" checked', page)
    assert 'name="choiceLabels"' in page and "Libellés des choix en Français (fr)" in page
    download = client.get(f"{base}/download?format=csv&choiceLabels=fr")
    assert download.status_code == 200 and download.data.startswith(BOM)
    frame = pd.read_csv(io.BytesIO(download.data), encoding="utf-8-sig", dtype=str)
    assert frame.columns[0] == "SubmissionDate" and frame["consent"].tolist()[1] == "Oui"
    assert "Awa Traoré" in frame["respondent-name"].tolist()
    # From the page's form with the box unticked: no mark.
    unticked = client.get(f"{base}/download?format=csv&options=form")
    assert unticked.data.startswith(b"SubmissionDate")
