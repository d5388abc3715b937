"""Every console page at a phone's width (390 px), in Chromium, with forms as they come (issue 19).

A coordinator on a phone met pages wider than the screen (the records' table made the
submissions page 636 px wide) and a form list whose version, state and count columns were cut
off, with form IDs such as ``onaio__onadata__..._mali_health``. This test builds such a site
through the API (a form with a long ID, title and version, a choice list of 60 communes, the
household form with a photo, records sent as Collect sends them), opens every page of the
console a coordinator reads at 390 px, and checks that

* nothing spills out sideways (``document.documentElement.scrollWidth <= 390``), and
* the list tables a coordinator works from (the project's forms, the records, tablets,
  members, accounts, the audit log) show every column inside the screen: on a phone each row
  becomes a card, each cell a line named by its column. Wider tables of reference (a form's
  questions, its versions) scroll inside their own box.

Screenshots go to test-artifacts/console/phone-*.png.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import requests

from tests.fixtures.forms import workbooks
from tests.support import browser as support
from tests.support.site import household_record

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDTH = support.PHONE["width"]
PHOTO = "1715090512345.png"
LONG_ID = "onaio__onadata__onadata_apps_main_tests_fixtures_mali_health_facilities"
LONG_VERSION = "2024061201[encrypted:AZAe9k2p]"
COMMUNES = [f"commune_{n:02d}" for n in range(1, 61)]
LONG_FORM = "\n".join(
    [
        "| survey |",
        "|        | type | name | label::Français (fr) | label::English (en) |",
        "|        | text | facility_name_as_written_on_the_signboard_at_the_entrance"
        " | Nom de l’établissement de santé tel qu’écrit sur l’enseigne à l’entrée"
        " | Name of the health facility as written on the sign at the entrance |",
        "|        | select_one commune | commune | Commune | Commune |",
        "|        | integer | beds | Nombre de lits | Number of beds |",
        "| choices |",
        "|         | list_name | name | label::Français (fr) | label::English (en) |",
        *(
            f"|         | commune | {name} | Commune rurale de {name} | Rural commune of {name} |"
            for name in COMMUNES
        ),
        "| settings |",
        "|          | form_id | version | form_title | default_language |",
        f"|          | {LONG_ID} | {LONG_VERSION} | Établissements de santé du Mali :"
        " inventaire des formations sanitaires | Français (fr) |",
    ]
)


def long_record(index: int) -> bytes:
    return (
        f'<?xml version="1.0"?><data id="{LONG_ID}" version="{LONG_VERSION}">'
        "<facility_name_as_written_on_the_signboard_at_the_entrance>"
        f"Centre de santé communautaire de Niamakoro-Sirakoro-Météo {index}"
        "</facility_name_as_written_on_the_signboard_at_the_entrance>"
        f"<commune>{COMMUNES[index * 7 % len(COMMUNES)]}</commune><beds>{index + 3}</beds>"
        f"<meta><instanceID>uuid:{uuid.uuid4()}</instanceID></meta></data>"
    ).encode()


def send(base: str, xml: bytes, files: dict[str, bytes] | None = None) -> None:
    """Send a record as ODK Collect does (its photos as PNG)."""
    multipart = [("xml_submission_file", ("record.xml", xml, "text/xml"))]
    multipart += [(name, (name, data, "image/png")) for name, data in (files or {}).items()]
    sent = requests.post(
        f"{base}/submission", files=multipart, headers={"X-OpenRosa-Version": "1.0"}, timeout=60
    )
    assert sent.status_code == 201, sent.text


def build_site(url: str) -> dict[str, str]:
    """Fill the console's default project through the API, as a coordinator's script would."""
    api = requests.Session()
    token = api.post(
        f"{url}/v1/sessions",
        json={"email": support.ADMIN_EMAIL, "password": support.ADMIN_PASSWORD},
        timeout=30,
    ).json()["token"]
    api.headers["Authorization"] = f"Bearer {token}"
    base = f"{url}/v1/projects/1"

    def ok(answer: requests.Response) -> dict:
        assert answer.status_code == 200, f"{answer.request.url}: {answer.text}"
        return answer.json()

    xlsx = {"Content-Type": workbooks.XLSX_TYPE}
    ok(api.post(f"{base}/forms?publish=true", data=workbooks.xlsx(LONG_FORM), headers=xlsx))
    household = workbooks.xlsx(workbooks.text("household.md"))
    ok(api.post(f"{base}/forms?ignoreWarnings=true", data=household, headers=xlsx))
    for name, data, kind in (
        ("villages.csv", workbooks.data("villages.csv"), "text/csv"),
        ("besoins.png", support.png(), "image/png"),
        ("needs.png", support.png(), "image/png"),
    ):
        ok(
            api.post(
                f"{base}/forms/household/draft/attachments/{name}",
                data=data,
                headers={"Content-Type": kind},
            )
        )
    ok(api.post(f"{base}/forms/household/draft/publish"))
    coordinator = ok(
        api.post(
            f"{url}/v1/users",
            json={
                "email": "aminata.coulibaly.coordination.segou@example.org",
                "password": "un mot de passe assez long",
                "displayName": "Aminata Coulibaly",
            },
        )
    )
    ok(api.post(f"{base}/assignments/manager/{coordinator['id']}"))
    tablet = ok(api.post(f"{base}/app-users", json={"displayName": "Tablette du CSCOM de Ségou"}))
    for form_id in ("household", LONG_ID):
        ok(api.post(f"{base}/forms/{form_id}/assignments/app-user/{tablet['id']}"))
    collect = f"{url}/v1/key/{tablet['token']}/projects/1"
    instance_id = f"uuid:{uuid.uuid4()}"
    send(collect, household_record(instance_id, photo=PHOTO), {PHOTO: support.png(320, 240)})
    for index in range(3):
        send(collect, long_record(index))
    return {"household": instance_id, "app_user": str(tablet["id"])}


def test_every_console_page_fits_a_phone(
    console: str, chromium, database_url: str, tmp_path: Path
) -> None:
    database = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    site = build_site(console)
    context = chromium.new_context(viewport=support.PHONE, locale="fr-FR")
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(console + "/")
    shot = support.screenshot(page, f"phone-{database}-00-sign-in")
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH, shot
    support.sign_in(page, console)

    long_form = f"/projects/1/forms/{LONG_ID}"
    household = "/projects/1/forms/household"
    pages = {
        "projects": "/",
        "project-forms": "/projects/1",
        "long-form": long_form,
        "long-form-submissions": f"{long_form}/submissions",
        "long-form-overview": f"{long_form}/overview",
        "long-form-export": f"{long_form}/export",
        "form": household,
        "submissions": f"{household}/submissions",
        "submission": f"{household}/submissions/{site['household']}",
        "overview": f"{household}/overview",
        "export": f"{household}/export",
        "app-users": "/projects/1/app-users",
        "app-user": f"/projects/1/app-users/{site['app_user']}",
        "members": "/projects/1/members",
        "accounts": "/users",
        "audit": "/audit",
        "password": "/account/password",
    }
    widths = {}
    for name, path in pages.items():
        page.goto(console + path)
        assert page.locator("h1").count() == 1, path
        support.screenshot(page, f"phone-{database}-{name}")
        widths[name] = page.evaluate("document.documentElement.scrollWidth")
    # The long lists, reached by the links their summaries give.
    page.goto(console + long_form)
    page.locator("details.choices summary").first.click()
    page.get_by_role("link", name="Voir les 60 choix").click()
    page.wait_for_load_state()
    support.screenshot(page, f"phone-{database}-choices")
    widths["choices"] = page.evaluate("document.documentElement.scrollWidth")
    wide = {name: width for name, width in widths.items() if width > WIDTH}
    assert wide == {}, f"pages wider than {WIDTH} px: {wide}"

    # The lists a coordinator works from show every column on the screen, none cut off.
    for path, table in (
        ("/projects/1", "table.forms"),
        (f"{long_form}/submissions", "table.submissions"),
        ("/projects/1/app-users", "table.cards"),
        ("/projects/1/members", "table.cards"),
        ("/users", "table.cards"),
        ("/audit", "table.audit"),
    ):
        page.goto(console + path)
        cells = page.locator(f"{table} tbody td")
        assert cells.count() > 0
        outside = page.evaluate(
            """([selector, width]) => [...document.querySelectorAll(selector + ' tbody td')]
                .filter(td => td.textContent.trim())
                .map(td => td.getBoundingClientRect())
                .filter(box => box.left < 0 || box.right > width).length""",
            [table, WIDTH],
        )
        assert outside == 0, path
        # Each value says what it is: the column's name goes with it.
        labels = page.evaluate(
            """selector => [...document.querySelectorAll(selector + ' tbody td[data-label]')]
                .map(td => getComputedStyle(td, '::before').content)""",
            table,
        )
        assert labels and all(label not in ("none", '""') for label in labels), labels
    page.goto(console + "/projects/1")
    row = page.locator("table.forms tbody tr", has_text="Établissements de santé du Mali")
    assert LONG_VERSION in row.inner_text()
    assert "Ouvert" in row.inner_text() and "3" in row.inner_text()
    context.close()
