"""A conflict in a real browser (Chromium, headless), against ``merit serve`` on each database.

Issue 19, item 1: a tablet sends a record, then the same instanceID with other answers and
another photo (409). The coordinator sees the count on the form's page and on the
submissions table, opens the list, compares the two side by side (at a laptop's and a phone's
width), and takes the second as an edit: the record gets its second version, the export shows
the new answers, the audit log names the decision. Screenshots go to test-artifacts/console/
(``<database>-conflict-*.png``).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
import requests

from tests.browser.test_console_browser import (
    INSTANCE_ID,
    household_record,
    send_as_collect,
    watch_for_page_errors,
)
from tests.fixtures.forms import workbooks
from tests.support import browser as support
from tests.support.browser import png

pytestmark = [pytest.mark.browser, pytest.mark.slow]

COORDINATOR = "coordinatrice@example.org"
PASSWORD = "mot de passe de la coordinatrice"


def _api(console: str) -> requests.Session:
    session = requests.Session()
    signed = session.post(
        f"{console}/v1/sessions",
        json={"email": support.ADMIN_EMAIL, "password": support.ADMIN_PASSWORD},
        timeout=30,
    )
    assert signed.status_code == 200, signed.text
    session.headers["Authorization"] = f"Bearer {signed.json()['token']}"
    return session


def _ok(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _prepare(console: str, tmp_path: Path) -> str:
    """Publish the household form, make a coordinator and a tablet; return the tablet's URL."""
    api = _api(console)
    base = f"{console}/v1/projects/1"
    _ok(
        api.post(
            f"{base}/forms?ignoreWarnings=true",
            data=workbooks.xlsx(workbooks.text("household.md")),
            headers={"Content-Type": workbooks.XLSX_TYPE},
            timeout=120,
        )
    )
    for name, data, kind in (
        ("besoins.png", png(), "image/png"),
        ("needs.png", png(), "image/png"),
        ("villages.csv", workbooks.data("villages.csv"), "text/csv"),
    ):
        _ok(
            api.post(
                f"{base}/forms/household/draft/attachments/{name}",
                data=data,
                headers={"Content-Type": kind},
                timeout=30,
            )
        )
    _ok(api.post(f"{base}/forms/household/draft/publish", timeout=60))
    coordinator = _ok(
        api.post(f"{console}/v1/users", json={"email": COORDINATOR, "password": PASSWORD})
    )
    _ok(api.post(f"{base}/assignments/manager/{coordinator['id']}", timeout=30))
    tablet = _ok(api.post(f"{base}/app-users", json={"displayName": "Tablette Ségou 2"}))
    _ok(api.post(f"{base}/forms/household/assignments/app-user/{tablet['id']}", timeout=30))
    return f"{console}/v1/key/{tablet['token']}/projects/1"


def _changed_record() -> bytes:
    """The same record (same instanceID), with another age, another photo and a second member."""
    xml = household_record().decode()
    xml = xml.replace("<age>34</age>", "<age>36</age>")
    xml = xml.replace("<photo>1715090512345.png</photo>", "<photo>1715090599999.png</photo>")
    xml = xml.replace(
        "<sex>m</sex></member>",
        "<sex>m</sex></member><member><member_name>Fanta</member_name><sex>f</sex></member>",
    )
    return xml.encode()


def test_a_coordinator_compares_a_conflict_and_takes_the_second_as_an_edit(
    console: str, laptop, chromium, database_url: str, tmp_path: Path
) -> None:
    database = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    tablet = _prepare(console, tmp_path)
    first = send_as_collect(tablet, household_record(), {"1715090512345.png": png()})
    assert first.status_code == 201, first.text
    second = send_as_collect(tablet, _changed_record(), {"1715090599999.png": png(64, 40)})
    assert second.status_code == 409, second.text
    assert "coordinat" in second.text

    page = laptop
    problems = watch_for_page_errors(page)
    support.sign_in(page, console, COORDINATOR, PASSWORD)
    page.goto(console + "/projects/1/forms/household")
    notice = page.locator(".conflicts-notice")
    assert notice.inner_text().strip() == (
        "1 fiche a été renvoyée avec d’autres réponses et attend votre décision."
    )
    support.screenshot(page, f"{database}-conflict-01-form-page-laptop")
    page.get_by_role("link", name="Soumissions").first.click()
    page.wait_for_load_state()
    assert page.locator(".conflicts-notice").is_visible()

    notice = page.locator(".conflicts-notice a")
    notice.click()
    page.wait_for_url(re.compile(r"/forms/household/conflicts$"))
    table = page.locator("table.conflicts")
    assert INSTANCE_ID in table.inner_text() and "à régler" in table.inner_text()
    support.screenshot(page, f"{database}-conflict-02-list-laptop")

    page.get_by_role("link", name="Comparer").click()
    page.wait_for_url(re.compile(r"/conflicts/\d+$"))
    compare = page.locator("table.compare")
    differing = compare.locator("tr.differs")
    labels = [text.strip() for text in differing.locator("th").all_inner_texts()]
    assert any("Âge" in label for label in labels), labels
    assert any("Photo du site" in label for label in labels), labels
    assert any("Nom du membre" in label for label in labels), labels
    age = compare.locator("tr.differs", has_text="Âge").locator("td").all_inner_texts()
    assert [cell.strip() for cell in age] == ["34", "36"]
    # Both photos are shown, the record's and the one sent again (served from the conflict).
    photos = compare.locator("img.photo")
    assert photos.count() == 2
    for index in range(2):
        photos.nth(index).scroll_into_view_if_needed()
        assert photos.nth(index).evaluate("img => img.complete && img.naturalWidth > 0")
    assert "/files/1715090599999.png" in photos.nth(1).get_attribute("src")
    assert "Fichiers gardés avec la fiche renvoyée : 1715090599999.png" in page.content()
    support.screenshot(page, f"{database}-conflict-03-compare-laptop")
    phone = chromium.new_context(viewport=support.PHONE, locale="fr-FR")
    try:
        small = phone.new_page()
        support.sign_in(small, console, COORDINATOR, PASSWORD)
        small.goto(page.url)
        assert small.locator("table.compare tr.differs").count() == differing.count()
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= support.PHONE["width"], width
        support.screenshot(small, f"{database}-conflict-04-compare-phone")
    finally:
        phone.close()

    page.get_by_role("button", name="Prendre la seconde comme modification").click()
    page.wait_for_url(re.compile(r"/submissions/" + re.escape(INSTANCE_ID) + "$"))
    assert "Conflit réglé : seconde fiche prise comme modification." in page.content()
    answers = page.locator("dl.answers-list").inner_text()
    assert "36" in answers and "Fanta" in answers
    assert page.locator("ol.versions li").count() == 2
    assert page.locator("img.photo").count() >= 1  # the photo sent again is the record's now
    support.screenshot(page, f"{database}-conflict-05-record-after-laptop")

    page.goto(console + "/projects/1/forms/household")
    assert page.locator(".conflicts-notice").count() == 0
    page.goto(console + "/projects/1/forms/household/conflicts?state=settled")
    assert "seconde fiche prise comme modification" in page.locator("table.conflicts").inner_text()
    support.screenshot(page, f"{database}-conflict-06-settled-laptop")

    api = _api(console)
    exported = api.get(f"{console}/v1/projects/1/forms/household/submissions.csv", timeout=60)
    rows = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert [(r["respondent-age"], r["photo"]) for r in rows] == [("36", "1715090599999.png")]
    audit = api.get(f"{console}/v1/audits?action=submission.conflict", timeout=30).json()
    assert {e["action"] for e in audit} >= {
        "submission.conflict.create",
        "submission.conflict.take",
    }
    assert problems == [], problems
