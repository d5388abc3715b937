"""Forms filled in a real browser with ODK Web Forms (issue 18, item 4), on each database.

A coordinator fills a form in the console (a region → cercle cascade, a photo, a constraint),
sees that a record breaking a constraint is not sent at all, sends it, finds it in the CSV
export with its photo, and edits it in the browser (a new version naming the old one). A
public link's holder, without an account, fills the form in English; a single-record link
takes one record per browser. The browser reports no Content-Security-Policy violation on any
of these pages: the engine runs with only what its page's policy gives it.
"""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest
import requests

from tests.browser.test_console_browser import shoot, watch_for_page_errors
from tests.fixtures.forms import workbooks
from tests.support import browser as support
from tests.support.browser import png
from tests.support.servers import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FORM = "saisie_web"


def api(console: str) -> dict[str, str]:
    """An administrator's bearer header for the API of the console's server."""
    token = requests.post(
        f"{console}/v1/sessions",
        json={"email": support.ADMIN_EMAIL, "password": support.ADMIN_PASSWORD},
        timeout=30,
    ).json()["token"]
    return {"Authorization": f"Bearer {token}"}


def publish_fixture(console: str, headers: dict[str, str]) -> None:
    """Publish the fixture form: French and English, a cascade, a photo, a constraint."""
    answer = requests.post(
        f"{console}/v1/projects/1/forms?publish=true",
        data=workbooks.xlsx(workbooks.text("webform.md")),
        headers={**headers, "Content-Type": workbooks.XLSX_TYPE},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text


def question(page, label: str):  # type: ignore[no-untyped-def]
    """The first input of the Web Forms question whose label holds ``label``."""
    return page.locator(".question-container", has_text=label).locator("input").first


def type_number(page, label: str, value: str) -> None:  # type: ignore[no-untyped-def]
    """Type into a number question as a person does (its widget reads keystrokes)."""
    field = question(page, label)
    field.fill("")
    field.press_sequentially(value)
    field.press("Tab")


def wait_for_form(page, label: str) -> None:  # type: ignore[no-untyped-def]
    page.locator(".question-container", has_text=label).first.wait_for(timeout=60_000)


def export_rows(console: str, headers: dict[str, str]) -> tuple[str, list[str]]:
    """Return the CSV export's main table and the names of the files in the archive."""
    answer = requests.get(
        f"{console}/v1/projects/1/forms/{FORM}/submissions.csv.zip", headers=headers, timeout=60
    )
    assert answer.status_code == 200, answer.text
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        return archive.read(f"{FORM}.csv").decode("utf-8"), archive.namelist()


def test_a_coordinator_fills_a_form_in_the_browser_and_finds_it_in_the_export(
    console: str, laptop, database_url: str, tmp_path: Path
) -> None:
    database = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    page = laptop
    problems = watch_for_page_errors(page)
    headers = api(console)
    publish_fixture(console, headers)
    photo = tmp_path / "fiche.png"
    photo.write_bytes(png())
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)

    support.sign_in(page, console)
    page.goto(f"{console}/projects/1/forms/{FORM}")
    page.get_by_role("link", name="Remplir dans le navigateur").click()
    # The form opens in the page's language (French), though its default is English.
    wait_for_form(page, "Nom de la personne")
    csp = page.evaluate("document.querySelector('#odk-web-form').dataset.state")
    assert csp == "mounted"
    question(page, "Nom de la personne").fill("Awa Traoré")
    type_number(page, "Âge", "12")  # breaks the constraint (15 or older)
    page.get_by_text("Ségou", exact=True).click()
    # The cascade: Ségou's cercles only.
    assert page.get_by_text("Niono", exact=True).is_visible()
    assert page.get_by_text("Djenné", exact=True).count() == 0
    page.get_by_text("Niono", exact=True).click()
    page.locator("input[type=file]").set_input_files(str(photo))
    before = len(posts)
    page.get_by_role("button", name="Send").click()
    page.get_by_text("15 ans ou plus").wait_for()
    time.sleep(1)  # a send would have started by now: nothing may have left the page
    assert posts[before:] == [], "a record breaking a constraint was sent"
    shoot(page, "webform-01-constraint", database)

    type_number(page, "Âge", "34")
    page.get_by_role("button", name="Send").click()
    status = page.locator("#odk-web-form-status")
    status.get_by_text("Fiche reçue : Awa Traoré.").wait_for()
    assert posts[before:] == [f"{console}/v1/projects/1/submission"]
    # A new, empty record is ready for the next questionnaire.
    assert question(page, "Nom de la personne").input_value() == ""
    shoot(page, "webform-02-sent", database)

    table, files = export_rows(console, headers)
    header, row = table.splitlines()[:2]
    cells = dict(zip(header.split(","), row.split(","), strict=True))
    assert cells["respondent"] == "Awa Traoré" and cells["age"] == "34"
    assert (cells["region"], cells["cercle"]) == ("segou", "niono")
    assert cells["SubmitterName"] == "Administrateur"  # the first account, named in French
    assert cells["AttachmentsPresent"] == "1" and cells["photo"].endswith(".png")
    assert f"media/{cells['photo']}" in files, files
    instance_id = cells["KEY"]

    # Edit the record in the browser: the new version names the one it replaces.
    page.goto(f"{console}/projects/1/forms/{FORM}/submissions/{instance_id}")
    page.get_by_role("link", name="Modifier dans le navigateur").click()
    wait_for_form(page, "Nom de la personne")
    name = question(page, "Nom de la personne")
    name.wait_for()
    page.wait_for_function(
        "document.querySelector('.question-container input').value === 'Awa Traoré'"
    )
    name.fill("Awa Traoré Diarra")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(f"**/submissions/{instance_id}")
    versions = requests.get(
        f"{console}/v1/projects/1/forms/{FORM}/submissions/{instance_id}/versions",
        headers=headers,
        timeout=30,
    ).json()
    assert len(versions) == 2
    newest = requests.get(
        f"{console}/v1/projects/1/forms/{FORM}/submissions/{instance_id}.xml",
        headers=headers,
        timeout=30,
    ).text
    assert "Awa Traoré Diarra" in newest and f"<deprecatedID>{instance_id}</deprecatedID>" in newest
    assert "<cercle>niono</cercle>" in newest
    table, _files = export_rows(console, headers)
    assert "Awa Traoré Diarra" in table and table.count("\n") == 2  # one record, edited
    shoot(page, "webform-03-edited", database)

    # The draft: a coordinator tries it; its records are test records, not the form's.
    assert (
        requests.post(
            f"{console}/v1/projects/1/forms/{FORM}/draft", headers=headers, timeout=30
        ).status_code
        == 200
    )
    page.goto(f"{console}/projects/1/forms/{FORM}")
    page.get_by_role("link", name="Essayer le brouillon dans le navigateur").click()
    wait_for_form(page, "Nom de la personne")
    question(page, "Nom de la personne").fill("Essai")
    type_number(page, "Âge", "40")
    page.get_by_text("Mopti", exact=True).click()
    page.get_by_text("Djenné", exact=True).click()
    page.get_by_role("button", name="Send").click()
    status.get_by_text("Fiche reçue : Essai.").wait_for()
    drafts = requests.get(
        f"{console}/v1/projects/1/forms/{FORM}/draft/submissions", headers=headers, timeout=30
    ).json()
    assert [d["instanceId"] for d in drafts] and "Essai" not in export_rows(console, headers)[0]

    assert problems == [], problems


def test_a_public_link_fills_its_form_without_an_account(
    console: str, chromium, database_url: str, tmp_path: Path
) -> None:
    database = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    headers = api(console)
    publish_fixture(console, headers)
    links = f"{console}/v1/projects/1/forms/{FORM}/public-links"
    link = requests.post(
        links, json={"displayName": "Bureau de Ségou"}, headers=headers, timeout=30
    ).json()
    once = requests.post(
        links, json={"displayName": "Une fois", "once": True}, headers=headers, timeout=30
    ).json()

    context = chromium.new_context(viewport=support.LAPTOP, locale="en-GB")
    context.set_default_timeout(30_000)
    page = context.new_page()
    problems = watch_for_page_errors(page)
    try:
        # Nobody is signed in: the link alone opens the form; English page, English form.
        page.goto(f"{console}/-/{link['token']}")
        page.get_by_role("link", name="English").click()
        wait_for_form(page, "Person's name")
        question(page, "Person's name").fill("Moussa Diarra")
        type_number(page, "Age", "51")
        page.get_by_text("Mopti", exact=True).click()
        page.get_by_text("Bandiagara", exact=True).click()
        page.get_by_role("button", name="Send").click()
        status = page.locator("#odk-web-form-status")
        status.get_by_text("Record received: Moussa Diarra.").wait_for()
        shoot(page, "webform-04-public-link", database)
        table, _files = export_rows(console, headers)
        assert "Moussa Diarra" in table and "Bureau de Ségou" in table

        # A single-record link: once sent, this browser is thanked and gets no new form.
        page.goto(f"{console}/-/{once['token']}")
        wait_for_form(page, "Person's name")
        question(page, "Person's name").fill("Fanta Keita")
        type_number(page, "Age", "19")
        page.get_by_text("Segou", exact=True).click()
        page.get_by_text("Bla", exact=True).click()
        page.get_by_role("button", name="Send").click()
        thanks = page.locator("#odk-web-form-status")
        thanks.get_by_text("Thank you: your answers have been received.").wait_for()
        page.reload()
        thanks.get_by_text("Thank you: your answers have been received.").wait_for()
        assert page.locator("#odk-web-form").is_hidden()

        # Revoked: the page is gone.
        requests.delete(f"{links}/{link['id']}", headers=headers, timeout=30)
        assert page.goto(f"{console}/-/{link['token']}").status == 404
    finally:
        context.close()
    assert problems == [], problems


def fill_everything(page, photo: Path, choices: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Answer every question the form shows, as it shows them (answers reveal questions).

    ``choices`` names the option to pick for some questions (label start -> option text);
    otherwise the first option, ``3`` for numbers, a sentence for text, the photo for images.
    Geopoints are left empty (the browser has no position).
    """
    done: set[str] = set()
    settled = False
    for _round in range(20):
        containers = page.locator(".question-container")
        progressed = False
        for index in range(containers.count()):
            box = containers.nth(index)
            if not box.is_visible():
                continue
            label = box.inner_text().split("\n")[0].strip()
            if label in done:
                continue
            wanted = next((v for k, v in choices.items() if label.startswith(k)), None)
            radios, checks = box.locator("input[type=radio]"), box.locator("input[type=checkbox]")
            files = box.locator("input[type=file]")
            texts = box.locator("input[type=text], input:not([type]), textarea")
            numbers = box.locator("input[inputmode=numeric], input[inputmode=decimal]")
            rank = box.get_by_role("button", name="Rank items")
            if rank.count():
                rank.first.click()  # takes the order shown as the answer
            elif radios.count() or checks.count():
                if wanted:
                    box.get_by_text(wanted, exact=True).first.click()
                else:
                    (radios if radios.count() else checks).first.click(force=True)
                if box.locator("input:checked").count() == 0:
                    continue  # the click did not take (the form was busy): next round
            elif files.count():
                files.first.set_input_files(str(photo))
            elif numbers.count():
                numbers.first.fill("")
                numbers.first.press_sequentially(wanted or "3")
                numbers.first.press("Tab")
            elif texts.count():
                texts.first.fill(wanted or "Réponse de test")
            else:
                continue
            done.add(label)
            progressed = True
        if progressed:
            settled = False
        elif settled:
            return
        else:
            # Answers reveal questions, later on a loaded machine: look once more after a pause.
            settled = True
            page.wait_for_timeout(1_500)


def test_a_programme_form_opens_and_fills_in_the_browser(
    chromium, database_url: str, tmp_path: Path
) -> None:
    forms = ROOT / "forms"
    photo = tmp_path / "site.png"
    photo.write_bytes(png())
    with support.console_server(database_url, tmp_path, MERIT_FORMS_DIR=str(forms)) as server:
        table, names = fill_programme_form(chromium, server.url, photo)
    assert "Réponse de test" in table
    assert any(name.startswith("media/") and name.endswith(".png") for name in names), names


def fill_programme_form(chromium, console: str, photo: Path) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    """Fill the needs assessment (consent, the region → cercle cascade, a photo), send it;
    return the CSV export's main table and the export's file names."""
    context = chromium.new_context(viewport=support.LAPTOP, locale="fr-FR")
    context.set_default_timeout(30_000)
    page = context.new_page()
    problems = watch_for_page_errors(page)
    try:
        support.sign_in(page, console)
        page.goto(f"{console}/projects/1/forms/needs_assessment/fill")
        page.locator(".question-container").first.wait_for(timeout=60_000)
        assert page.get_by_text("An error occurred while loading this form").count() == 0
        fill_everything(
            page,
            photo,
            {
                "Code de l'enquêteur": "E07",
                "Acceptez-vous de participer": "Oui",
                "Région": "Ségou",
                "Numéro de téléphone": "76543210",
            },
        )
        cercles = page.locator(".question-container", has_text="Cercle").first
        assert "Niono" in cercles.inner_text() and "Bandiagara" not in cercles.inner_text()
        page.get_by_role("button", name="Send").click()
        support.screenshot(page, "webform-programme-sent")
        status = page.locator("#odk-web-form-status").get_by_text("Fiche reçue")
        try:
            status.wait_for(timeout=60_000)
        except Exception:
            wrong = page.locator(".question-container:has(.validation-message:visible)")
            raise AssertionError(wrong.all_inner_texts()) from None
    finally:
        context.close()
    assert problems == [], problems
    headers = api(console)
    answer = requests.get(
        f"{console}/v1/projects/1/forms/needs_assessment/submissions.csv.zip",
        headers=headers,
        timeout=60,
    )
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        return archive.read("needs_assessment.csv").decode("utf-8"), archive.namelist()
