"""A real server with the cast an attacker can play: the hostile suite's stage.

:func:`start_site` runs ``merit serve`` (gunicorn, as in production) on the given database and
builds, through the API only (as a coordinator would), a site with:

    admin           the administrator created on first start
    manager         the coordinator of project 1 ("Programme Mali")
    viewer          an analyst of project 1: reads and exports, no personal data in clear
    formfill        a data collector of project 1 with an account
    other_manager   the coordinator of ANOTHER project (project ``other_project_id``)
    tablet          an app user of project 1, assigned to the household form
    anonymous       no credentials

and the household form (``tests/fixtures/forms/household.md``: ``name``, ``photo``, ``head``
and ``member_name`` marked ``pii``; instanceName built from ``name``) published in project 1,
with one record sent by the tablet holding the planted personal values below.

Every principal but the tablet and anonymous has an API session (:meth:`Site.api`, a bearer
token) and a console session (:meth:`Site.console`, cookie + CSRF token, signed in through the
sign-in page as a person would). The tablet posts with :meth:`Site.submit`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import requests
from urllib3 import encode_multipart_formdata

from tests.fixtures.forms import workbooks
from tests.support.servers import ServerProcess

ADMIN_EMAIL = "admin@example.org"
PASSWORD = "un mot de passe de test assez long"
FORM_ID = "household"
FORM_VERSION = "2024050701"
# What the tablet's first record holds in its personal fields: no route may show these to
# someone without the personal-data right (tests/hostile/test_analyst_personal_data.py).
PLANTED = {
    "name": "Aminata Planted-Dembélé",
    "head": "Moussa Planted-Keïta",
    "member_name": "Fanta Planted-Coulibaly",
}
PHOTO_NAME = "1715090512345.jpg"
PHOTO = b"\xff\xd8\xff\xe0" + b"planted face" * 200 + b"\xff\xd9"
VILLAGES_CSV = workbooks.data("villages.csv")


@dataclass
class Site:
    """A running server and the people and tablet of its two projects."""

    server: ServerProcess
    database_url: str
    data_dir: Path
    project_id: int = 1
    other_project_id: int = 0
    emails: dict[str, str] = field(default_factory=dict)
    actor_ids: dict[str, int] = field(default_factory=dict)
    tablet_token: str = ""
    tablet_id: int = 0
    instance_id: str = ""
    _api: dict[str, requests.Session] = field(default_factory=dict)
    _console: dict[str, requests.Session] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    # ---- principals --------------------------------------------------------------------

    def api(self, who: str) -> requests.Session:
        """A requests session carrying ``who``'s bearer token (``anonymous``: none)."""
        if who not in self._api:
            session = requests.Session()
            if who != "anonymous":
                answer = session.post(
                    f"{self.url}/v1/sessions",
                    json={"email": self.emails[who], "password": PASSWORD},
                    timeout=30,
                )
                answer.raise_for_status()
                session.headers["Authorization"] = f"Bearer {answer.json()['token']}"
            self._api[who] = session
        return self._api[who]

    def console(self, who: str) -> requests.Session:
        """A requests session signed in to the console as ``who`` (``.csrf`` holds its token)."""
        if who not in self._console:
            session = requests.Session()
            session.csrf = ""  # type: ignore[attr-defined]
            if who != "anonymous":
                page = session.get(f"{self.url}/login", timeout=30)
                token = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
                answer = session.post(
                    f"{self.url}/login",
                    data={"email": self.emails[who], "password": PASSWORD, "login_token": token},
                    timeout=30,
                )
                answer.raise_for_status()
                home = session.get(f"{self.url}/", timeout=30).text
                found = re.search(r'name="csrf_token" value="([^"]+)"', home)
                session.csrf = found.group(1) if found else ""  # type: ignore[attr-defined]
            self._console[who] = session
        return self._console[who]

    @property
    def tablet_base(self) -> str:
        """The tablet's server address, as its QR code gives it to ODK Collect."""
        return f"{self.url}/v1/key/{self.tablet_token}/projects/{self.project_id}"

    def submit(
        self, xml: bytes, files: Iterable[tuple[str, bytes, str]] = (), **kwargs
    ) -> requests.Response:
        """POST a record as ODK Collect does (multipart, OpenRosa headers) from the tablet."""
        body, content_type = encode_multipart_formdata(
            [
                ("xml_submission_file", ("record.xml", xml, "text/xml")),
                *((name, (name, content, kind)) for name, content, kind in files),
            ]
        )
        headers = {"Content-Type": content_type, "X-OpenRosa-Version": "1.0"}
        return requests.post(
            f"{self.tablet_base}/submission", data=body, headers=headers, timeout=60, **kwargs
        )

    # ---- the database, as an attacker never sees it: for checking what was stored ------

    def count(self, table: str) -> int:
        import sqlalchemy as sa

        from server.db import create_engine

        engine = create_engine(self.database_url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as connection:
                return connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar()  # noqa: S608
        finally:
            engine.dispose()


def household_record(
    instance_id: str | None = None,
    *,
    name: str = PLANTED["name"],
    head: str = PLANTED["head"],
    member_name: str = PLANTED["member_name"],
    photo: str = PHOTO_NAME,
    age: str = "34",
    version: str = FORM_VERSION,
) -> bytes:
    """Return a household record as ODK Collect writes it."""
    instance_id = instance_id or f"uuid:{uuid.uuid4()}"
    xml = (
        '<?xml version="1.0" ?>'
        f'<{FORM_ID} xmlns:jr="http://openrosa.org/javarosa" '
        f'xmlns:orx="http://openrosa.org/xforms" id="{FORM_ID}" version="{version}">'
        "<start>2024-05-07T10:00:00.000+00:00</start><today>2024-05-07</today><audit/>"
        f"<respondent><name>{escape(name)}</name><age>{age}</age></respondent>"
        "<village>segou</village><location>12.65 -8.0 350 5</location>"
        f"<photo>{escape(photo)}</photo>"
        "<needs>water food</needs><priorities>food water</priorities>"
        f"<household><head>{escape(head)}</head>"
        f"<member><member_name>{escape(member_name)}</member_name><sex>f</sex></member>"
        "</household>"
        "<household_count>1</household_count><thanks/>"
        f"<meta><instanceID>{instance_id}</instanceID>"
        f"<instanceName>{escape(name)}</instanceName></meta>"
        f"</{FORM_ID}>"
    )
    return xml.encode("utf-8")


def _ok(answer: requests.Response) -> dict:
    assert answer.status_code < 300, f"{answer.request.method} {answer.url}: {answer.text}"
    return answer.json() if answer.content else {}


@contextmanager
def start_site(
    database_url: str, tmp_path: Path, env: Mapping[str, str] | None = None
) -> Iterator[Site]:
    """Run a server on ``database_url`` (emptied by the caller) and build the site on it."""
    data_dir = tmp_path / "var"
    settings = {
        "MERIT_DATA_DIR": str(data_dir),
        "MERIT_DATABASE_URL": database_url,
        "MERIT_ADMIN_EMAIL": ADMIN_EMAIL,
        "MERIT_ADMIN_PASSWORD": PASSWORD,
        "MERIT_FORMS_DIR": str(tmp_path / "no-forms"),
        "MERIT_WORKERS": "1",
        "MERIT_THREADS": "8",
        "MERIT_ODK_VALIDATE": "false",
        "MERIT_LOG_JSON": "false",
        **(env or {}),
    }
    with ServerProcess(settings, log_path=tmp_path / "server.log") as process:
        site = Site(server=process, database_url=database_url, data_dir=data_dir)
        site.emails["admin"] = ADMIN_EMAIL
        admin = site.api("admin")
        url = process.url
        other = _ok(admin.post(f"{url}/v1/projects", json={"name": "Autre projet"}, timeout=30))
        site.other_project_id = other["id"]
        roles = {"manager": "manager", "viewer": "viewer", "formfill": "formfill"}
        for who, role in [*roles.items(), ("other_manager", "manager")]:
            email = f"{who.replace('_', '-')}@example.org"
            user = _ok(admin.post(f"{url}/v1/users", json={"email": email, "password": PASSWORD}))
            project = site.other_project_id if who == "other_manager" else site.project_id
            role_id = {"manager": 3, "viewer": 4, "formfill": 5}[role]
            _ok(admin.post(f"{url}/v1/projects/{project}/assignments/{role_id}/{user['id']}"))
            site.emails[who] = email
            site.actor_ids[who] = user["id"]
        manager = site.api("manager")
        forms = f"{url}/v1/projects/{site.project_id}/forms"
        _ok(
            manager.post(
                forms,
                data=workbooks.xlsx(workbooks.text("household.md")),
                headers={"Content-Type": workbooks.XLSX_TYPE},
                params={"ignoreWarnings": "true"},
            )
        )
        _ok(
            manager.post(
                f"{forms}/{FORM_ID}/draft/attachments/villages.csv",
                data=VILLAGES_CSV,
                headers={"Content-Type": "text/csv"},
            )
        )
        for image in ("besoins.png", "needs.png"):
            manager.post(
                f"{forms}/{FORM_ID}/draft/attachments/{image}",
                data=b"\x89PNG\r\n\x1a\n" + b"0" * 64,
                headers={"Content-Type": "image/png"},
            )
        _ok(manager.post(f"{forms}/{FORM_ID}/draft/publish"))
        tablet = _ok(
            manager.post(
                f"{url}/v1/projects/{site.project_id}/app-users", json={"displayName": "Tablette"}
            )
        )
        site.tablet_token, site.tablet_id = tablet["token"], tablet["id"]
        _ok(manager.post(f"{forms}/{FORM_ID}/assignments/app-user/{tablet['id']}"))
        site.instance_id = f"uuid:{uuid.uuid4()}"
        sent = site.submit(household_record(site.instance_id), [(PHOTO_NAME, PHOTO, "image/jpeg")])
        assert sent.status_code == 201, sent.text
        yield site
