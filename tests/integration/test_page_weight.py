"""The console over a thin mobile connection: a real 541-row form's pages stay light (issue 19).

A coordinator uploads the Burkina Faso MSNA tool of the shared corpus (541 rows, a list of
10,757 localités), a tablet sends 20 records, and every console page of that form is opened
as a browser on a phone opens it (``Accept-Encoding: gzip``). Each page must weigh at most
:data:`BUDGET` bytes before compression, and come compressed. The long localités list is
summarised where it used to be listed whole (the overview listed every localité at 0 %, the
form page every localité in its structure); the pages that list it in full are paged.

Run with ``-s`` to see each page's weight, uncompressed and on the wire.
"""

from __future__ import annotations

import gzip
import io
import random
import re
import uuid
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import pytest
import sqlalchemy as sa

from server.forms.models import Form, FormVersion
from tests.support import factories

pytestmark = pytest.mark.slow

FORM_FILE = "ElliottMess__BFA_MSNA_Analysis__data_reach_bfa_msna_outil_V2_deployed.xlsx"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
BUDGET = 300_000
RECORDS = 20
GZIP = {"Accept-Encoding": "gzip, deflate, br"}


def value_for(field: dict[str, Any], lists: dict[str, list], rng: random.Random) -> str | None:
    """Return an answer a tablet could send for a question of the schema (None: left empty)."""
    kind = field.get("type")
    choices = [c["name"] for c in lists.get(field.get("choices") or "", [])]
    if kind == "select_one":
        return rng.choice(choices) if choices else None
    if kind == "select_multiple":
        return " ".join(rng.sample(choices, min(len(choices), rng.randint(1, 3)))) or None
    if kind == "int":
        return str(rng.randint(0, 12))
    if kind == "decimal":
        return f"{rng.uniform(0, 100):.2f}"
    if kind == "date":
        return f"2024-05-{rng.randint(1, 28):02d}"
    if kind == "dateTime":
        return f"2024-05-{rng.randint(1, 28):02d}T10:{rng.randint(0, 59):02d}:00.000Z"
    if kind == "geopoint":
        return f"{rng.uniform(10, 14):.5f} {rng.uniform(-4, 1):.5f} 300.0 5.0"
    if kind == "string" and field.get("control") == "input" and not field.get("readonly"):
        return rng.choice(["RAS", "Néant", "Bon accueil du ménage", "Pas de réponse"])
    return None


def record_xml(schema: dict[str, Any], rng: random.Random) -> bytes:
    """Return a record of the form: answers at the root and in groups, repeats left empty."""
    root = schema["root"]
    lists = schema["choiceLists"]
    tree: dict[str, Any] = {}
    for field in schema["fields"]:
        if field.get("kind") != "field" or field.get("repeat"):
            continue
        parts = field["path"].split("/")[2:]
        if not parts or parts[0] == "meta":
            continue
        value = value_for(field, lists, rng)
        if value is None:
            continue
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def write(node: dict[str, Any]) -> str:
        return "".join(
            f"<{name}>{write(value) if isinstance(value, dict) else escape(value)}</{name}>"
            for name, value in node.items()
        )

    version = escape(schema.get("version") or "", {'"': "&quot;"})
    return (
        f'<?xml version="1.0"?><{root} id="{schema["formId"]}" version="{version}">'
        f"{write(tree)}<meta><instanceID>uuid:{uuid.uuid4()}</instanceID></meta></{root}>"
    ).encode()


def sign_in(client, email: str) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)[1]
    signed = client.post(
        "/login", data={"email": email, "password": factories.PASSWORD, "login_token": token}
    )
    assert signed.status_code == 303, signed.text


@pytest.fixture
def msna(client, db_session, shared_dir: Path) -> dict[str, Any]:
    """The MSNA form published in a project, with 20 records sent by a tablet."""
    path = shared_dir / "corpus" / "xlsforms" / FORM_FILE
    if not path.is_file():
        pytest.skip(f"{path} is absent: this test needs the shared XLSForm corpus")
    factories.user(db_session, "admin@example.org", role="admin")
    project = factories.project(db_session, "Programme Mali")
    tablet, token = factories.app_user(db_session, project.id)
    bearer = client.post(
        "/v1/sessions", json={"email": "admin@example.org", "password": factories.PASSWORD}
    ).json["token"]
    api = {"Authorization": f"Bearer {bearer}"}
    created = client.post(
        f"/v1/projects/{project.id}/forms?ignoreWarnings=true&publish=true",
        data=path.read_bytes(),
        headers={**api, "Content-Type": XLSX, "X-XlsForm-FormId-Fallback": path.stem},
    )
    assert created.status_code == 200, created.text
    form_id = created.json["xmlFormId"]
    assigned = client.post(
        f"/v1/projects/{project.id}/forms/{form_id}/assignments/app-user/{tablet.actor_id}",
        headers=api,
    )
    assert assigned.status_code == 200, assigned.text
    form = db_session.scalars(sa.select(Form).where(Form.xml_form_id == form_id)).one()
    schema = db_session.get(FormVersion, form.current_version_id).schema
    rng = random.Random(19)
    instances = []
    for _ in range(RECORDS):
        xml = record_xml(schema, rng)
        sent = client.post(
            f"/v1/key/{token}/projects/{project.id}/submission",
            data={"xml_submission_file": (io.BytesIO(xml), "record.xml", "text/xml")},
            headers={"X-OpenRosa-Version": "1.0"},
        )
        assert sent.status_code == 201, sent.text
        instances.append(re.search(rb"<instanceID>([^<]+)<", xml)[1].decode())
    return {"project_id": project.id, "form_id": form_id, "instances": instances}


def weigh(client, url: str) -> tuple[str, int, int]:  # type: ignore[no-untyped-def]
    """Open a page as a phone's browser does; return its HTML, its size and its size on the wire."""
    answer = client.get(url, headers=GZIP)
    assert answer.status_code == 200, (url, answer.status_code)
    assert answer.headers["Content-Encoding"] == "gzip", url
    assert "Accept-Encoding" in answer.headers["Vary"]
    assert int(answer.headers["Content-Length"]) == len(answer.data)
    html = gzip.decompress(answer.data)
    return html.decode(), len(html), len(answer.data)


def link(html: str, pattern: str) -> str:
    """Return the first link of the page whose address matches ``pattern``."""
    found = re.search(rf'href="({pattern}[^"]*)"', html)
    assert found, pattern
    return unescape(found[1])


def test_every_console_page_of_a_big_form_is_light_and_compressed(client, msna):
    sign_in(client, "admin@example.org")
    project = f"/projects/{msna['project_id']}"
    base = f"{project}/forms/{quote(msna['form_id'], safe='')}"
    pages = {
        "project": project,
        "form": base,
        "overview": f"{base}/overview",
        "submissions": f"{base}/submissions",
        "export": f"{base}/export",
        "record": f"{base}/submissions/{quote(msna['instances'][0], safe=':')}",
    }
    seen: dict[str, tuple[str, int, int]] = {
        name: weigh(client, url) for name, url in pages.items()
    }
    # The pages that show a long list whole, reached by the links the summaries give.
    form_html, overview_html = seen["form"][0], seen["overview"][0]
    choices = link(form_html, f"{re.escape(base)}/versions/\\d+/choices")
    seen["choice list"] = weigh(client, choices)
    answers = link(overview_html, f"{re.escape(base)}/overview/choices")
    seen["choice answers"] = weigh(client, answers)
    seen["overview, page 2"] = weigh(
        client, link(overview_html, f"{re.escape(base)}/overview\\?page=2")
    )
    print(f"\n{'page':<18}{'bytes':>10}{'gzip':>10}")
    for name, (_html, size, wire) in seen.items():
        print(f"{name:<18}{size:>10}{wire:>10}")
    heavy = {name: size for name, (_html, size, _wire) in seen.items() if size > BUDGET}
    assert heavy == {}, f"pages over {BUDGET} bytes before compression: {heavy}"

    # The 10,757 localités: summarised where they were listed whole, paged where they are.
    assert form_html.count("<li><code>") < 2_000
    assert re.search(r"Voir les 10\W757 choix", form_html)
    listed = seen["choice list"][0]
    assert listed.count("<tr><td><code>") == 100
    # A filter finds a village whatever its accents: «dedougou» finds «Dédougou».
    found = weigh(client, choices + "&q=dedougou")[0]
    assert "dougou" in found.lower() and found.count("<tr><td><code>") < 100
    # Every localité answered on the overview is among its most frequent answers or counted.
    assert re.search(r"et 10\W7\d\d autres choix", overview_html)
    assert seen["choice answers"][0].count('<tr><th scope="row">') == 100
