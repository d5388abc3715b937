"""Conflicts (issue 19, item 1): a tablet sends a record again under its instanceID with other
answers; the coordinator sees it, compares it and settles it, in the API and the console.

Every test runs on SQLite and PostgreSQL, over real HTTP requests to the application.
"""

from __future__ import annotations

import csv
import io
import re

import pytest
import sqlalchemy as sa

from server.audit.models import AuditEvent
from server.submissions.models import SubmissionConflict, SubmissionConflictFile
from tests.support import factories
from tests.support.openrosa import FORM_ID, jpeg, new_instance_id, post_record, record

PHOTO, PHOTO2 = "1715090512345.jpg", "1715090599999.jpg"


@pytest.fixture
def site(client, db_session, device):
    """The device's project with a coordinator, an analyst and another project's coordinator."""
    project_id = device["project"].id
    other = factories.project(db_session, "Autre projet")
    factories.user(db_session, "coord@example.org", role="manager", project_id=project_id)
    factories.user(db_session, "analyst@example.org", role="viewer", project_id=project_id)
    factories.user(db_session, "outsider@example.org", role="manager", project_id=other.id)
    return {
        **device,
        "api": f"/v1/projects/{project_id}/forms/{FORM_ID}",
        "console": f"/projects/{project_id}/forms/{FORM_ID}",
    }


def bearer(client, email: str) -> dict[str, str]:
    signed = client.post("/v1/sessions", json={"email": email, "password": factories.PASSWORD})
    assert signed.status_code == 200, signed.text
    return {"Authorization": f"Bearer {signed.json['token']}"}


def conflict_sent(client, site) -> str:
    """A then A' (same instanceID, age 35 and another photo, plus a file for no question)."""
    iid = new_instance_id()
    first = post_record(client, site["base"], record(iid, audit=None), {PHOTO: jpeg(1)})
    assert first.status_code == 201, first.text
    second = post_record(
        client,
        site["base"],
        record(iid, age="35", photo=PHOTO2, audit=None),
        {PHOTO2: jpeg(2), "notes-perso.txt": b"hors formulaire"},
    )
    assert second.status_code == 409, second.text
    return iid


def actions(db_session) -> list[str]:
    db_session.rollback()
    return [e.action for e in db_session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id))]


def test_a_conflict_taken_as_an_edit_becomes_the_records_new_version_with_its_photo(
    client, db_session, site
):
    iid = conflict_sent(client, site)
    coord = bearer(client, "coord@example.org")

    listed = client.get(site["api"] + "/conflicts", headers=coord)
    assert listed.status_code == 200, listed.text
    [conflict] = listed.json
    assert conflict["instanceId"] == iid and conflict["resolution"] is None
    assert conflict["attachments"] == [PHOTO2]  # the file its XML names was kept with it
    assert conflict["droppedAttachments"] == {"count": 1, "names": ["notes-perso.txt"]}
    assert conflict["formVersion"] == "2024050701"

    one = client.get(f"{site['api']}/conflicts/{conflict['id']}", headers=coord)
    assert one.status_code == 200, one.text
    assert one.json["differences"] == [
        {"path": "/data/age", "current": "34", "conflicting": "35"},
        {"path": "/data/photo", "current": PHOTO, "conflicting": PHOTO2},
    ]
    xml = client.get(f"{site['api']}/conflicts/{conflict['id']}.xml", headers=coord)
    assert b"<age>35</age>" in xml.data

    taken = client.patch(
        f"{site['api']}/conflicts/{conflict['id']}",
        json={"resolution": "takeSecond"},
        headers=coord,
    )
    assert taken.status_code == 200, taken.text
    assert taken.json["resolution"] == "takeSecond" and taken.json["resolvedAt"]
    new_id = taken.json["versionInstanceId"]
    assert new_id.startswith("uuid:") and new_id != iid

    versions = client.get(f"{site['api']}/submissions/{iid}/versions", headers=coord).json
    assert len(versions) == 2
    current = next(v for v in versions if v["current"])
    assert current["instanceId"] == new_id and current["deprecatedId"] == iid
    assert current["attachmentsPresent"] == current["attachmentsExpected"] == 1
    photo = client.get(f"{site['api']}/submissions/{iid}/attachments/{PHOTO2}", headers=coord)
    assert photo.status_code == 200 and photo.data == jpeg(2)
    record_json = client.get(f"{site['api']}/submissions/{iid}", headers=coord).json
    assert record_json["reviewState"] == "edited"

    exported = client.get(f"{site['api']}/submissions.csv", headers=coord)
    rows = list(csv.DictReader(io.StringIO(exported.data.decode("utf-8-sig"))))
    assert [(r["age"], r["photo"]) for r in rows] == [("35", PHOTO2)]

    # The tablet sending the payload again is told it was received; nothing changes.
    resent = post_record(
        client, site["base"], record(iid, age="35", photo=PHOTO2, audit=None), {PHOTO2: jpeg(2)}
    )
    assert resent.status_code == 201, resent.text
    assert len(client.get(f"{site['api']}/submissions/{iid}/versions", headers=coord).json) == 2

    again = client.patch(
        f"{site['api']}/conflicts/{conflict['id']}", json={"resolution": "discard"}, headers=coord
    )
    assert again.status_code == 409 and again.json["code"] == 409.23
    assert client.get(site["api"] + "/conflicts?resolved=false", headers=coord).json == []
    assert {"submission.conflict.create", "submission.conflict.take"} <= set(actions(db_session))
    assert actions(db_session).count("submission.update.version") == 1


def test_keeping_the_first_leaves_the_record_and_keeps_the_payload_on_file(
    client, db_session, site
):
    iid = conflict_sent(client, site)
    coord = bearer(client, "coord@example.org")
    [conflict] = client.get(site["api"] + "/conflicts", headers=coord).json
    kept = client.patch(
        f"{site['api']}/conflicts/{conflict['id']}",
        json={"resolution": "keepFirst"},
        headers=coord,
    )
    assert kept.status_code == 200, kept.text
    assert kept.json["resolution"] == "keepFirst" and kept.json["versionInstanceId"] is None
    assert len(client.get(f"{site['api']}/submissions/{iid}/versions", headers=coord).json) == 1
    xml = client.get(f"{site['api']}/conflicts/{conflict['id']}.xml", headers=coord)
    assert b"<age>35</age>" in xml.data  # still on file
    assert kept.json["attachments"] == [PHOTO2]
    assert "submission.conflict.keep" in actions(db_session)


def test_discarding_forgets_the_payload_and_its_files_but_recognises_it_again(
    client, db_session, site
):
    iid = conflict_sent(client, site)
    coord = bearer(client, "coord@example.org")
    [conflict] = client.get(site["api"] + "/conflicts", headers=coord).json
    discarded = client.patch(
        f"{site['api']}/conflicts/{conflict['id']}",
        json={"resolution": "discard"},
        headers=coord,
    )
    assert discarded.status_code == 200, discarded.text
    assert discarded.json["attachments"] == []
    db_session.rollback()
    row = db_session.scalars(sa.select(SubmissionConflict)).one()
    assert row.raw_xml == "" and row.resolution == "discard"
    assert db_session.scalars(sa.select(SubmissionConflictFile)).all() == []
    assert len(client.get(f"{site['api']}/submissions/{iid}/versions", headers=coord).json) == 1
    # The same payload sent again is answered as a retry (settled: the tablet may stop
    # sending it), and neither kept a second time nor added to the record.
    resent = post_record(
        client, site["base"], record(iid, age="35", photo=PHOTO2, audit=None), {PHOTO2: jpeg(2)}
    )
    assert resent.status_code == 201, resent.text
    assert len(client.get(f"{site['api']}/submissions/{iid}/versions", headers=coord).json) == 1
    # Other answers again are a new conflict.
    other = post_record(client, site["base"], record(iid, age="37", photo=None, audit=None))
    assert other.status_code == 409
    db_session.rollback()
    assert db_session.scalar(sa.select(sa.func.count()).select_from(SubmissionConflict)) == 2
    assert actions(db_session).count("submission.conflict.create") == 2
    assert "submission.conflict.discard" in actions(db_session)


def test_only_the_projects_coordinators_see_and_settle_conflicts(client, site):
    conflict_sent(client, site)
    coord = bearer(client, "coord@example.org")
    [conflict] = client.get(site["api"] + "/conflicts", headers=coord).json
    one = f"{site['api']}/conflicts/{conflict['id']}"
    for email in ("analyst@example.org", "outsider@example.org"):
        headers = bearer(client, email)
        assert client.get(site["api"] + "/conflicts", headers=headers).status_code == 403
        assert client.get(one, headers=headers).status_code == 403
        refused = client.patch(one, json={"resolution": "discard"}, headers=headers)
        assert refused.status_code == 403
    assert client.get(site["api"] + "/conflicts").status_code == 401
    # A tablet learns nothing of the form's records: 404.
    tablet = f"/v1/key/{site['token']}" + site["api"].removeprefix("/v1") + "/conflicts"
    assert client.get(tablet).status_code == 404
    assert client.get(f"{site['api']}/conflicts/999999", headers=coord).status_code == 404
    bad = client.patch(one, json={"resolution": "both"}, headers=coord)
    assert bad.status_code == 400 and "resolution" in bad.json["message"]
    still = client.get(site["api"] + "/conflicts", headers=coord).json
    assert still[0]["resolution"] is None


def test_a_split_upload_of_the_conflicting_payload_adds_its_missing_files(client, db_session, site):
    iid = new_instance_id()
    members = (("Moussa", "m1.jpg"),)
    assert (
        post_record(client, site["base"], record(iid, audit=None), {PHOTO: jpeg(1)}).status_code
        == 201
    )
    changed = record(iid, age="36", audit=None, members=members)
    assert post_record(client, site["base"], changed, {PHOTO: jpeg(1)}).status_code == 409
    assert post_record(client, site["base"], changed, {"m1.jpg": jpeg(3)}).status_code == 409
    coord = bearer(client, "coord@example.org")
    [conflict] = client.get(site["api"] + "/conflicts", headers=coord).json
    assert conflict["attachments"] == [PHOTO, "m1.jpg"]
    taken = client.patch(
        f"{site['api']}/conflicts/{conflict['id']}",
        json={"resolution": "takeSecond"},
        headers=coord,
    )
    assert taken.status_code == 200, taken.text
    files = client.get(f"{site['api']}/submissions/{iid}/attachments", headers=coord).json
    assert files == [{"name": PHOTO, "exists": True}, {"name": "m1.jpg", "exists": True}]


def test_files_sent_for_no_question_are_counted_on_the_record(client, site):
    iid = new_instance_id()
    sent = post_record(
        client,
        site["base"],
        record(iid, audit=None),
        {PHOTO: jpeg(1), "../../carnet.pdf": b"%PDF", "Zone\u202etxt.exe": b"MZ"},
    )
    assert sent.status_code == 201
    # A retry with the same extra file counts it once; a new one is added.
    post_record(
        client, site["base"], record(iid, audit=None), {"carnet.pdf": b"%PDF", "x.amr": b"#!AMR"}
    )
    coord = bearer(client, "coord@example.org")
    body = client.get(f"{site['api']}/submissions/{iid}", headers=coord).json
    assert body["droppedAttachments"] == {
        "count": 3,
        "names": ["carnet.pdf", "Zonetxt.exe", "x.amr"],
    }
    versions = client.get(f"{site['api']}/submissions/{iid}/versions", headers=coord).json
    assert versions[0]["droppedAttachments"]["count"] == 3
    page = _console(client, "coord@example.org").get(f"{site['console']}/submissions/{iid}")
    assert page.status_code == 200
    text = re.sub(r"\s+", " ", page.text)
    # In French, the console's default language.
    assert "3 fichiers envoyés avec cette fiche ne répondent à aucune question" in text
    assert "carnet.pdf, Zonetxt.exe, x.amr." in text


def _console(client, email: str):
    """Sign in to the console (the session cookie stays in the client)."""
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)[1]
    signed = client.post(
        "/login", data={"email": email, "password": factories.PASSWORD, "login_token": token}
    )
    assert signed.status_code == 303, signed.text
    return client


def _csrf(client, url: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(url).text)[1]


def test_the_coordinator_sees_the_count_compares_and_takes_the_second_in_the_console(
    client, db_session, site
):
    iid = conflict_sent(client, site)
    console = _console(client, "coord@example.org")
    for page in (site["console"], site["console"] + "/submissions"):
        shown = re.sub(r"\s+", " ", console.get(page).text)
        assert "1 fiche a été renvoyée avec d’autres réponses et attend votre décision." in shown
    on_record = re.sub(r"\s+", " ", console.get(f"{site['console']}/submissions/{iid}").text)
    assert "Cette fiche a été renvoyée avec d’autres réponses : comparez-les et décidez." in (
        on_record
    )
    listed = console.get(site["console"] + "/conflicts")
    assert listed.status_code == 200 and iid in listed.text
    link = re.search(r'href="(/projects/[^"]+/conflicts/\d+)"', listed.text)[1]
    compared = console.get(link)
    assert compared.status_code == 200
    text = re.sub(r"\s+", " ", compared.text)
    assert "2 réponses diffèrent." in text
    differing = re.findall(r'<tr class="differs">(.*?)</tr>', compared.text, re.S)
    assert len(differing) == 2
    assert ">34<" in re.sub(r"\s+", "", differing[0]) and ">35<" in re.sub(r"\s+", "", differing[0])
    assert "Fichiers gardés avec la fiche renvoyée : 1715090599999.jpg" in text
    photo = console.get(f"{link}/files/1715090599999.jpg")  # the photo sent again, to compare
    assert photo.status_code == 200 and photo.data == jpeg(2)
    assert "sandbox" in photo.headers["Content-Security-Policy"]
    assert console.get(f"{link}/files/autre.jpg").status_code == 404
    taken = console.post(
        link + "/resolve",
        data={"resolution": "takeSecond", "csrf_token": _csrf(console, link)},
    )
    assert taken.status_code == 303 and taken.headers["Location"].endswith(iid)
    record_page = re.sub(r"\s+", " ", console.get(taken.headers["Location"]).text)
    assert "Conflit réglé : seconde fiche prise comme modification." in record_page
    assert "35" in record_page
    for page in (site["console"], site["console"] + "/submissions"):
        assert "attend votre décision" not in console.get(page).text
    assert "comparez-les et décidez" not in record_page
    settled = console.get(site["console"] + "/conflicts?state=settled").text
    assert "seconde fiche prise comme modification" in settled
    again = console.post(
        link + "/resolve", data={"resolution": "discard", "csrf_token": _csrf(console, link)}
    )
    assert again.status_code == 409 and "déjà été réglé" in again.text


def test_the_console_hides_conflicts_from_analysts_and_other_projects(client, site):
    conflict_sent(client, site)
    coord = bearer(client, "coord@example.org")
    [conflict] = client.get(site["api"] + "/conflicts", headers=coord).json
    for email in ("analyst@example.org", "outsider@example.org"):
        console = _console(client.application.test_client(), email)
        assert console.get(site["console"] + "/conflicts").status_code == 403
        assert console.get(f"{site['console']}/conflicts/{conflict['id']}").status_code == 403
    analyst = _console(client.application.test_client(), "analyst@example.org")
    page = analyst.get(site["console"] + "/submissions").text
    assert "attend votre décision" not in page and "/conflicts" not in page


def test_personal_answers_are_pseudonymised_in_the_comparison_for_readers_without_the_right(
    client, db_session, site
):
    """Conflicts are for coordinators, who see personal data; anyone else holding
    submission.update over a form without submission.pii would read pseudonyms, as everywhere.
    Checked on the service's pieces, with the disclosure an analyst gets."""
    from server import personal
    from server.submissions import conflicts
    from server.web import structure

    iid = new_instance_id()
    post_record(client, site["base"], record(iid, name="Awa Traoré", photo=None, audit=None))
    post_record(client, site["base"], record(iid, name="Awa Diarra", photo=None, audit=None))
    form = site["form"]
    version = db_session.get(type(form), form.id).current_version_id
    from server.forms.models import FormVersion

    fv = db_session.get(FormVersion, version)
    fv.schema = {
        **fv.schema,
        "fields": [{**f, "pii": f["name"] == "name"} for f in fv.schema["fields"]],
    }
    db_session.commit()
    row = conflicts.list_conflicts(db_session, form.id)[0]
    found = conflicts.contents(db_session, form, row.conflict)
    fields = personal.personal_fields([fv.schema])
    hidden = personal.Disclosure(fields, clear=False, pseudonymise=lambda v: f"pid_{len(v)}")
    first = hidden.document(found.current.raw_document, instance_id=iid, channel="test")
    second = hidden.document(found.document, instance_id=iid, channel="test")
    pairs = structure.side_by_side(
        structure.answers(found.current_schema, first, None, str, set(), hidden=hidden.hidden),
        structure.answers(found.schema, second, None, str, set(), hidden=hidden.hidden),
    )
    name = next(p for p in pairs if p.shown.name == "name")
    assert name.first.hidden and name.second.hidden
    assert "Awa" not in name.first.value + name.second.value
    assert [p for p in conflicts.differences(first, second) if "Awa" in str(p)] == []
