"""Forms that declare entities (XLSForm Markdown, compiled by pyxform) and records of them.

The records are written the way ODK Collect writes them: the entity block in ``meta`` with
its attributes (``dataset``, ``create``/``update``, ``id``, ``baseVersion``, and the offline
``trunkVersion`` and ``branchId``), the label as a child of a created entity.
"""

from __future__ import annotations

import uuid as uuidlib
from xml.sax.saxutils import escape, quoteattr

from tests.support import factories
from tests.support.openrosa import multipart

_REGISTRATION = """\
| survey |
| | type | name | label | save_to |
| | text | full_name | Name | full_name |
| | text | code | Code | code |
| | text | site | Site | site |
| entities |
| | list_name | label |
| | participants | concat(${code}, ' ', ${full_name}) |
| settings |
| | form_id | version |
| | registration | VERSION |
"""


def registration_form(version: str = "1", *, sex: bool = False) -> str:
    """The registration form; ``sex`` adds a question saved to a new property."""
    text = _REGISTRATION.replace("VERSION", version)
    if sex:
        text = text.replace(
            "| | text | site | Site | site |",
            "| | text | site | Site | site |\n| | text | sex | Sex | sex |",
        )
    return text


REVIEW = """\
| survey |
| | type | name | label | save_to |
| | select_one_from_file participants.csv | participant | Participant | |
| | date | review_date | Date | last_review_date |
| | text | status | Status | risk_status |
| entities |
| | list_name | entity_id |
| | participants | ${participant} |
| settings |
| | form_id | version |
| | review | 1 |
"""

# Creates the entity when the code is new, updates it otherwise (an upsert).
UPSERT = """\
| survey |
| | type | name | label | save_to |
| | select_one_from_file participants.csv | existing | Existing | |
| | text | code | Code | code |
| entities |
| | list_name | entity_id | create_if | update_if | label |
| | participants | coalesce(${existing}, uuid()) | ${existing} = '' | ${existing} != '' | ${code} |
| settings |
| | form_id | version |
| | upsert | 1 |
"""


def login(client, email: str) -> dict[str, str]:
    token = client.post("/v1/sessions", json={"email": email, "password": factories.PASSWORD}).json[
        "token"
    ]
    return {"Authorization": f"Bearer {token}"}


def upload(client, headers, project_id: int, markdown: str, *, publish: bool = True):
    """Upload an XLSForm (Markdown) through the API, published unless asked otherwise."""
    return client.post(
        f"/v1/projects/{project_id}/forms?publish={'true' if publish else 'false'}",
        data=markdown.encode("utf-8"),
        headers={**headers, "Content-Type": "text/markdown"},
    )


def new_id() -> str:
    return f"uuid:{uuidlib.uuid4()}"


def _record(form_id: str, version: str, fields: str, entity: str, instance_id: str, extra=""):
    return (
        f'<?xml version="1.0" ?><data xmlns:jr="http://openrosa.org/javarosa" '
        f'xmlns:orx="http://openrosa.org/xforms" id="{form_id}" version="{version}">'
        f"{fields}<meta>{entity}<instanceID>{instance_id}</instanceID>{extra}</meta></data>"
    ).encode()


def registration(
    entity_id: str,
    *,
    full_name: str = "Awa Traoré",
    code: str = "P-001",
    site: str = "Ségou",
    instance_id: str | None = None,
    version: str = "1",
    deprecated_id: str | None = None,
) -> bytes:
    label = f"{code} {full_name}"
    fields = (
        f"<full_name>{escape(full_name)}</full_name><code>{escape(code)}</code>"
        f"<site>{escape(site)}</site>"
    )
    entity = (
        f'<entity dataset="participants" create="1" id="{entity_id}">'
        f"<label>{escape(label)}</label></entity>"
    )
    extra = f"<deprecatedID>{deprecated_id}</deprecatedID>" if deprecated_id else ""
    return _record("registration", version, fields, entity, instance_id or new_id(), extra)


def review(
    entity_id: str,
    *,
    base_version: int | str,
    trunk_version: int | str = "",
    branch_id: str = "",
    review_date: str = "2026-03-01",
    status: str = "low",
    instance_id: str | None = None,
    deprecated_id: str | None = None,
) -> bytes:
    fields = (
        f"<participant>{entity_id}</participant><review_date>{review_date}</review_date>"
        f"<status>{escape(status)}</status>"
    )
    entity = (
        f'<entity dataset="participants" update="1" baseVersion={quoteattr(str(base_version))} '
        f"trunkVersion={quoteattr(str(trunk_version))} branchId={quoteattr(branch_id)} "
        f'id="{entity_id}"/>'
    )
    extra = f"<deprecatedID>{deprecated_id}</deprecatedID>" if deprecated_id else ""
    return _record("review", "1", fields, entity, instance_id or new_id(), extra)


def upsert(existing: str, entity_id: str, *, code: str, create: bool) -> bytes:
    fields = f"<existing>{existing}</existing><code>{escape(code)}</code>"
    entity = (
        f'<entity dataset="participants" create="{"1" if create else "0"}" '
        f'update="{"0" if create else "1"}" baseVersion="{"" if create else "1"}" '
        f'trunkVersion="" branchId="" id="{entity_id}"><label>{escape(code)}</label></entity>'
    )
    return _record("upsert", "1", fields, entity, new_id())


def send(client, base: str, xml: bytes, device: str = "collect:AbC123dEf456GhIj"):
    """POST a record as Collect does (multipart, deviceID) to a tablet's OpenRosa address."""
    return client.post(
        f"{base}/submission?deviceID={device}",
        data=multipart(xml),
        headers={"X-OpenRosa-Version": "1.0"},
        content_type="multipart/form-data",
    )
