"""The console in a real browser (Chromium, headless), against ``merit serve`` on each database.

One scenario walks what the issue asks of the console, as a coordinator and an analyst would:
sign in; upload a broken XLSForm and read its row error; upload a good one, attach its media,
publish it; create an app user and read its QR code back into the expected Collect settings;
send a record through the OpenRosa endpoint as Collect does and find it in the table; review
it; export and open the file; switch to English. Screenshots of the main pages, at a laptop's
and a phone's width, go to test-artifacts/console/.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
import requests
import segno

from server.openrosa import settings as collect
from tests.fixtures.forms import workbooks
from tests.support import browser as support

pytestmark = [pytest.mark.browser, pytest.mark.slow]

INSTANCE_ID = "uuid:6b1d4c1e-2f0a-4c55-9a43-1d2c3b4a5f60"


def household_record(instance_id: str = INSTANCE_ID) -> bytes:
    """Return a record of the household fixture form, written the way Collect writes it."""
    return (
        '<?xml version="1.0" ?><data xmlns:jr="http://openrosa.org/javarosa" '
        'xmlns:orx="http://openrosa.org/xforms" id="household" version="2024050701">'
        "<start>2024-05-07T10:00:00.000Z</start><today>2024-05-07</today><audit/>"
        "<respondent><name>Awa Traoré</name><age>34</age></respondent>"
        "<village>segou</village><location>13.4317 -6.2658 290.0 4.5</location>"
        "<photo>1715090512345.png</photo><needs>water food</needs>"
        "<priorities>food water shelter</priorities>"
        "<household><head>Moussa Diarra</head><member><member_name>Ali</member_name>"
        "<sex>m</sex></member></household><household_count>1</household_count><thanks/>"
        f"<meta><instanceID>{instance_id}</instanceID><instanceName>Awa Traoré</instanceName>"
        "</meta></data>"
    ).encode()


def send_as_collect(server_url: str, xml: bytes, files: dict[str, bytes]) -> requests.Response:
    """POST a record to the OpenRosa endpoint the QR code configures, as ODK Collect does."""
    multipart = [("xml_submission_file", ("record.xml", xml, "text/xml"))]
    multipart += [(name, (name, data, "image/png")) for name, data in files.items()]
    return requests.post(
        f"{server_url}/submission",
        files=multipart,
        headers={"X-OpenRosa-Version": "1.0"},
        timeout=60,
    )


def watch_for_page_errors(page) -> list[str]:  # type: ignore[no-untyped-def]
    """Collect what the browser reports as errors: CSP violations, script errors, 4xx assets."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on(
        "console",
        lambda message: (
            problems.append(message.text)
            if message.type == "error" and "Failed to load resource" not in message.text
            else None
        ),
    )
    page.on(
        "response",
        lambda response: (
            problems.append(f"{response.status} {response.url}")
            if "/static/console/" in response.url and response.status >= 400
            else None
        ),
    )
    return problems


def shoot(page, name: str, database: str) -> Path:  # type: ignore[no-untyped-def]
    return support.screenshot(page, f"{database}-{name}")


def test_coordinator_and_analyst_in_a_real_browser(
    console: str, laptop, chromium, database_url: str, tmp_path: Path
) -> None:
    database = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    page = laptop
    problems = watch_for_page_errors(page)
    page.on("dialog", lambda dialog: dialog.accept())

    # The first page of `make run` is the sign-in page, in French.
    page.goto(console + "/")
    assert page.locator("h1").inner_text() == "Connexion"
    assert page.evaluate("document.documentElement.lang") == "fr"
    shoot(page, "01-sign-in-laptop", database)
    support.sign_in(page, console)
    assert page.locator("h1").inner_text() == "Projets"
    assert page.get_by_role("link", name="Programme Mali").is_visible()
    shoot(page, "02-projects-laptop", database)

    # A broken spreadsheet: its error is shown with its sheet and row; nothing is stored.
    page.get_by_role("link", name="Programme Mali").click()
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(workbooks.xlsx(workbooks.text("broken.md")))
    page.set_input_files("input[name=xlsform]", str(broken))
    page.get_by_role("button", name="Envoyer et vérifier").click()
    errors_table = page.locator("table.located")
    errors_table.wait_for()
    row = errors_table.locator("tbody tr").first
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == "survey" and cells[1] == "3" and cells[2] == "name", cells
    assert "q1" in cells[3]
    assert "Ce projet n’a encore aucun formulaire." in page.content()
    shoot(page, "03-upload-errors-laptop", database)

    # A good one: its structure, in both of its languages, before anything is published.
    good = tmp_path / "household.xlsx"
    good.write_bytes(workbooks.xlsx(workbooks.text("household.md")))
    page.set_input_files("input[name=xlsform]", str(good))
    page.get_by_role("button", name="Envoyer et vérifier").click()
    page.wait_for_url(re.compile(r"/projects/1/forms/household$"))
    structure = page.locator("table.structure")
    assert "Répondant" in structure.inner_text() and "Respondent" in structure.inner_text()
    assert page.locator("th", has_text="English (en)").count() == 1
    assert page.locator(".draft .badge.bad").count() == 3  # three media files missing
    shoot(page, "04-form-draft-laptop", database)

    # Attach its media, then publish.
    files = {
        "besoins.png": support.png(),
        "needs.png": support.png(),
        "villages.csv": workbooks.data("villages.csv"),
    }
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        row = page.locator("tr", has=page.locator("code", has_text=name)).first
        row.locator("input[type=file]").set_input_files(str(path))
        row.get_by_role("button", name="Joindre").click()
        page.wait_for_load_state()
    assert page.locator(".draft .badge.bad").count() == 0
    page.get_by_role("button", name="Publier").click()
    page.wait_for_load_state()
    assert "La version 2024050701 est publiée." in page.locator(".notice.ok").inner_text()
    assert page.locator("#versions").get_by_text("2024050701").is_visible()

    # An app user for one tablet, and its QR code.
    page.get_by_role("link", name="Programme Mali").click()
    page.get_by_role("link", name="Utilisateurs mobiles").click()
    page.fill("input[name=name]", "Tablette Ségou 1")
    page.get_by_role("button", name="Créer et afficher son code QR").click()
    page.wait_for_load_state()
    page.select_option("select[name=autosend]", "wifi_only")
    page.select_option("select[name=image_size]", "very_small")
    page.fill("input[name=admin_password]", "mot-de-passe-admin")
    with page.expect_response(lambda r: r.url.endswith("/qr")) as answered:
        page.get_by_role("button", name="Créer le code QR").click()
    html = answered.value.text()
    page.wait_for_load_state()
    payload = page.locator("figure[data-payload]").get_attribute("data-payload")
    settings = collect.decode(payload)
    server_url = settings["general"]["server_url"]
    assert re.fullmatch(re.escape(console) + r"/v1/key/[A-Za-z0-9!$]{64}/projects/1", server_url)
    assert settings["general"]["autosend"] == "wifi_only"
    assert settings["general"]["image_size"] == "very_small"
    assert settings["general"]["form_update_mode"] == "match_exactly"
    assert settings["general"]["username"] == settings["general"]["password"] == ""
    assert settings["admin"] == {"change_server": False, "admin_pw": "mot-de-passe-admin"}
    assert settings["project"]["name"] == "Programme Mali – Tablette Ségou 1"
    # The picture is segno's rendering of exactly that payload (what the tablet scans).
    expected_svg = segno.make(payload, error="m", micro=False).svg_inline(
        scale=1, border=4, svgclass="qr", lineclass=None, omitsize=True, dark="#000", light="#fff"
    )
    assert expected_svg in html
    assert "mot-de-passe-admin" not in answered.value.url
    shoot(page, "05-qr-code-laptop", database)

    # The tablet sends a record with a photo, as ODK Collect does; it appears in the table.
    sent = send_as_collect(server_url, household_record(), {"1715090512345.png": support.png()})
    assert sent.status_code == 201, sent.text
    page.goto(console + "/projects/1/forms/household/submissions")
    record_link = page.get_by_role("link", name="Awa Traoré")
    assert record_link.is_visible()
    assert page.locator("td .badge", has_text="Reçue").count() == 1
    shoot(page, "06-submissions-laptop", database)

    # Its page: answers labelled in French, its photo, then a review with a comment.
    record_link.click()
    answers = page.locator("dl.answers-list")
    assert "Nom" in answers.inner_text() and "Awa Traoré" in answers.inner_text()
    assert "Eau, Nourriture" in answers.inner_text()
    assert "Ségou" in answers.inner_text()
    photo = page.locator("img.photo")
    photo.wait_for()
    # Attached is not loaded: wait until the browser is done with the image (a broken one is
    # "complete" too, with no width), then check it is the photo the tablet sent.
    image = photo.element_handle()
    page.wait_for_function("img => img.complete", arg=image)
    assert page.evaluate("img => img.naturalWidth", image) == 48
    page.fill("textarea[name=comment]", "Vérifiée au téléphone.")
    page.get_by_role("button", name="Approuver").click()
    page.wait_for_load_state()
    assert page.locator("h1 .badge").inner_text() == "Approuvée"
    assert "Vérifiée au téléphone." in page.locator("blockquote").inner_text()
    shoot(page, "07-submission-laptop", database)

    # Overview: charts and the map are drawn on the server.
    page.get_by_role("link", name="Synthèse").click()
    page.wait_for_url("**/overview")  # count() does not wait for the navigation
    assert page.locator(".timechart rect").count() == 1
    assert page.locator(".map circle").count() == 1
    shoot(page, "08-overview-laptop", database)

    # Export: the download starts from the form; the file opens and holds the record.
    page.get_by_role("link", name="Export").first.click()
    with page.expect_download() as downloading:
        page.get_by_role("button", name="Télécharger").click()
    download = downloading.value
    assert download.suggested_filename == "household.csv.zip"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        names = archive.namelist()
        main = archive.read("household.csv").decode("utf-8")
    assert "Awa Traoré" in main and INSTANCE_ID in main
    assert "approved" in main
    assert any(name.endswith("1715090512345.png") for name in names), names
    # The main table alone, answers as French choice labels: the file starts with the
    # byte-order mark Excel on Windows needs (ticked by default on this page).
    page.locator('input[name="format"][value="csv"]').check()
    page.locator('select[name="choiceLabels"]').select_option(index=1)
    assert page.locator('input[name="bom"]').is_checked()
    shoot(page, "09-export-laptop", database)
    with page.expect_download() as downloading:
        page.get_by_role("button", name="Télécharger").click()
    table = downloading.value.path().read_bytes()
    assert table.startswith("\ufeff".encode())
    header, first = table.decode("utf-8-sig").splitlines()[:2]
    assert header.startswith("SubmissionDate,") and "Eau; Nourriture" in first

    # English: the switch keeps the page, and labels come from the form's English column.
    page.goto(console + f"/projects/1/forms/household/submissions/{INSTANCE_ID}")
    page.get_by_role("link", name="English").click()
    page.wait_for_load_state()
    assert page.evaluate("document.documentElement.lang") == "en"
    answers = page.locator("dl.answers-list").inner_text()
    assert "Name" in answers and "Water, Food" in answers and "Segou" in answers
    assert page.get_by_role("button", name="Sign out").is_visible()
    shoot(page, "10-submission-english-laptop", database)
    page.goto(console + "/audit")
    assert page.locator("table.audit tbody tr").count() >= 5
    shoot(page, "11-audit-english-laptop", database)

    # The same pages at a phone's width, signed in with the same cookies.
    phone_context = chromium.new_context(
        viewport=support.PHONE, storage_state=page.context.storage_state()
    )
    phone = phone_context.new_page()
    phone_problems = watch_for_page_errors(phone)
    for name, path in (
        ("projects", "/"),
        ("form", "/projects/1/forms/household"),
        ("submissions", "/projects/1/forms/household/submissions"),
        ("submission", f"/projects/1/forms/household/submissions/{INSTANCE_ID}"),
        ("overview", "/projects/1/forms/household/overview"),
        ("export", "/projects/1/forms/household/export"),
        ("app-users", "/projects/1/app-users"),
    ):
        phone.goto(console + path)
        # Nothing spills out sideways: wide tables scroll inside their own box.
        assert phone.evaluate("document.documentElement.scrollWidth") <= support.PHONE["width"]
        shoot(phone, f"20-{name}-phone", database)
    phone_context.close()

    # Signing out ends the session: the console asks to sign in again.
    page.get_by_role("button", name="Sign out").click()
    page.goto(console + "/projects/1")
    assert "/login" in page.url
    assert problems == [] and phone_problems == []


def test_uploads_work_without_javascript(
    console: str, chromium, database_url: str, tmp_path: Path
) -> None:
    """With scripts off, the upload form is an ordinary form post and shows the same errors."""
    context = chromium.new_context(viewport=support.LAPTOP, java_script_enabled=False)
    page = context.new_page()
    support.sign_in(page, console)
    page.goto(console + "/projects/1")
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(workbooks.xlsx(workbooks.text("broken.md")))
    page.set_input_files("input[name=xlsform]", str(broken))
    page.get_by_role("button", name="Envoyer et vérifier").click()
    page.wait_for_load_state()
    assert page.url.endswith("/projects/1/forms")  # the plain POST's answer
    cells = page.locator("table.located tbody tr").first.locator("td").all_inner_texts()
    assert cells[:3] == ["survey", "3", "name"]
    # A file that is no spreadsheet at all gets a plain message, never a server error.
    notes = tmp_path / "notes.pdf"
    notes.write_bytes(b"%PDF-1.4 not a form")
    page.set_input_files("input[name=xlsform]", str(notes))
    page.get_by_role("button", name="Envoyer et vérifier").click()
    page.wait_for_load_state()
    assert "Type de fichier non pris en charge" in page.locator("table.located").inner_text()
    context.close()


def test_wrong_password_and_lockout_are_explained(console: str, laptop, database_url: str) -> None:
    page = laptop
    for _ in range(5):
        support.sign_in(page, console, password="not the password")
    text = page.locator("[role=alert]").inner_text()
    assert "Trop de tentatives de connexion" in text
    # Even the right password is refused while the account is locked.
    support.sign_in(page, console)
    assert "Trop de tentatives de connexion" in page.locator("[role=alert]").inner_text()
    assert page.locator("h1").inner_text() == "Connexion"
