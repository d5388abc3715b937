"""The route-by-role matrix (issue 8): who may do what, and a walk of every route by every
kind of principal that checks each allow and each deny against a realistic site.

``MATRIX`` names every URL rule of the application (``app.url_map``) with each method it takes
(HEAD only where the route declares it itself: OpenRosa's preflights), and says for each
principal what it must get. The expectations come from what the roles are for (README,
server/auth/roles.py, ODK Central's verbs), not from what the server answers today; where the
server answers otherwise on purpose, a comment says so. The principals:

    anonymous       no credentials
    admin           a site administrator
    manager         the project's manager (a coordinator)
    viewer          the project's viewer (an analyst: reads, exports, cleaning logs)
    formfill        the project's data collector with a personal account (submits)
    other_manager   the manager of ANOTHER project: nothing of this project is theirs
    device          an app user of the project (a tablet), its token in the path
                    (``/v1/key/<token>/...``), assigned to the project's forms
    other_device    an app user of the other project, assigned to that project's form
    link            a public link to the project's household form (issue 18), its token in
                    the path as a tablet's: it may fill that form and do nothing else

A cell is one of:

    ALLOW   the request gets through and is done: not 401, not 403, not a redirect to the
            sign-in page, and, as every request targets a real object of the site, a 2xx or 3xx
            (but for the few refusals after the access check in NOT_DONE_BY_DESIGN)
    DENY    refused, the way its area refuses (below)
    HIDE    refused with 404, as if nothing were there: a tablet asking for what it may not
            read of a form (records, another project's forms), and, through OpenRosa, someone
            who may not submit to the form (404.1). ODK Central refuses with 403 there (401
            through OpenRosa): a matter of taste, noted and kept
    EMPTY   answered, but with nothing of the project in it (another project's tablet asking
            for this project's form list gets an empty list, as in Central)

How each area refuses:

    API (``api.*``, JSON)           anonymous 401; anyone signed in 403; a device 403, never
    OpenRosa (``openrosa.*``, XML)  401 (a bad or unfit token must not make Collect ask for a
                                    password it does not have)
    console (``web.*``, HTML)       anonymous: a GET is sent to ``/login?next=...`` (303), a POST
                                    gets a 401 page; anyone signed in: a 403 page
    health, metrics, static files   open to all; nothing to refuse

A device's token only ever opens ``/v1``: the middleware takes ``/v1/key/<token>`` off the path,
so the console and health routes cannot be reached with it and the device columns do not apply
to them.

Credentials as each area takes them: a bearer token from ``POST /v1/sessions`` for the API and
OpenRosa routes (Digest is tested in test_auth.py), the console's session cookie and its CSRF
token for ``web.*``, the path token for devices.

Some answers carry credentials of their own: a draft's token opens the draft's OpenRosa routes
to whoever holds it (``/v1/test/<token>/...``), a tablet's token is the tablet. Every answer of
the walk is also searched for them (:func:`credentials`): a token may reach only the principals
the matrix lets do what it opens. (The form API used to show the draft's token to everyone who
may read the form: viewers, data collectors and tablets could then open the draft.)

Each principal walks every route on a site of its own (the test runs once per principal and
database, and the database is emptied before each). Within a walk reads come first, then
changes, then deletions, then what needs a deletion first (restoring a record), and deleting the
project comes last; changes target objects nobody else reads (a spare tablet, a spare record,
a second draft...), so every check meets the site as it was built.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.exceptions import NotFound

from server.forms.models import Form
from server.submissions.models import SubmissionConflict
from tests.fixtures.forms import workbooks
from tests.support import factories
from tests.support.openrosa import (
    FORM_ID,
    OPENROSA,
    VERSION,
    VILLAGES_CSV,
    XFORM,
    jpeg,
    multipart,
    new_instance_id,
    publish_form,
    record,
)

PASSWORD = factories.PASSWORD
PHOTO = "1715090512345.jpg"

ALLOW, DENY, HIDE, EMPTY = "ALLOW", "DENY", "HIDE", "EMPTY"

WEB_PRINCIPALS = ("anonymous", "admin", "manager", "viewer", "formfill", "other_manager")
DEVICES = ("device", "other_device", "link")  # token holders: the token is in the path
PRINCIPALS = WEB_PRINCIPALS + DEVICES

# Names for the groups the matrix uses most.
GROUPS = {
    "everyone": PRINCIPALS,
    "signed_in": PRINCIPALS[1:],
    "members": ("admin", "manager", "viewer", "formfill"),  # hold a role in the project
    "readers": ("admin", "manager", "viewer"),  # read and export the records
    "managers": ("admin", "manager"),  # run the project
    "submitters": ("admin", "manager", "formfill", "device", "link"),  # may send records
}


def who(allow: str = "", *, hide: str = "", empty: str = "") -> dict[str, str]:
    """One row of the matrix: the principals (or groups) in ``allow`` may; the others may not."""
    row = dict.fromkeys(PRINCIPALS, DENY)
    for cell, names in ((ALLOW, allow), (HIDE, hide), (EMPTY, empty)):
        for name in names.split():
            for principal in GROUPS.get(name, (name,)):
                assert principal in PRINCIPALS, name
                row[principal] = cell
    return row


# ---- the matrix --------------------------------------------------------------------------------

V = "/v1"
P = V + "/projects/<int:project_id>"
F = P + "/forms/<xml_form_id>"
D = F + "/draft"
DATASET = P + "/datasets/<name>"
WP = "/projects/<int:project_id>"
WF = WP + "/forms/<xml_form_id>"

# A form's records, the same under .../submissions and .../draft/submissions (a draft's test
# records): Central checks the same verbs on both. Devices submit but read nothing back.
RECORDS = who("readers", hide="device other_device link")
RECORD_CHANGES = who("managers", hide="device other_device link")
SUBMISSIONS: dict[tuple[str, str], dict[str, str]] = {
    ("", "GET"): RECORDS,
    ("", "POST"): who("submitters", hide="other_device"),
    ("/<instance_id>", "GET"): RECORDS,
    ("/<instance_id>", "PUT"): RECORD_CHANGES,  # an edit
    ("/<instance_id>", "PATCH"): RECORD_CHANGES,  # a review
    ("/<instance_id>.xml", "GET"): RECORDS,
    ("/<instance_id>/comments", "GET"): RECORDS,
    ("/<instance_id>/comments", "POST"): RECORD_CHANGES,  # Central: submission.update
    ("/<instance_id>/attachments", "GET"): RECORDS,
    ("/<instance_id>/attachments/<path:name>", "GET"): RECORDS,
    ("/<instance_id>/attachments/<path:name>", "POST"): RECORD_CHANGES,
    ("/<instance_id>/attachments/<path:name>", "DELETE"): RECORD_CHANGES,
    ("/<instance_id>/audits", "GET"): RECORDS,
    ("/<instance_id>/versions", "GET"): RECORDS,
    ("/<instance_id>/versions/<version_id>", "GET"): RECORDS,
    ("/<instance_id>/versions/<version_id>.xml", "GET"): RECORDS,
    ("/<instance_id>/versions/<version_id>/attachments", "GET"): RECORDS,
    ("/<instance_id>/versions/<version_id>/attachments/<path:name>", "GET"): RECORDS,
    ("/<instance_id>", "DELETE"): RECORD_CHANGES,  # to the trash
    ("/<instance_id>/restore", "POST"): RECORD_CHANGES,
}

# OData over a form's records (and its draft's): what analysts' tools read.
ODATA = {
    (".svc", "GET"): RECORDS,
    (".svc/$metadata", "GET"): RECORDS,
    (".svc/<path:subpath>", "GET"): RECORDS,
}

# Reading a published form: every member, and the tablets it is assigned to.
FORM_READERS = who("members device link", hide="other_device")
# A draft is read and changed only by those who may change the form (Central reads an
# unpublished definition with form.update). Devices are refused with 403, not hidden.
DRAFT = who("managers")

MATRIX: dict[tuple[str, str], dict[str, str]] = {
    # ---- sessions, users, roles, audit log, the API's description
    (V + "/sessions", "POST"): who("everyone"),  # signing in; the body names the account
    (V + "/sessions/restore", "GET"): who("everyone"),  # one's own bearer session (404: none)
    (V + "/sessions/<token>", "DELETE"): who("admin"),  # SOMEONE ELSE's session (own: test_auth)
    (V + "/users/current", "GET"): who("signed_in"),  # a device gets its own actor
    (V + "/users", "GET"): who("admin"),
    (V + "/users", "POST"): who("admin"),
    (V + "/users/<int:actor_id>", "GET"): who("admin"),  # another account (oneself: always)
    (V + "/users/<int:actor_id>", "PATCH"): who("admin"),
    # Only the account itself changes its password, with the old one: not even an
    # administrator (the route asks for the old password, which nobody else has).
    (V + "/users/<int:actor_id>/password", "PUT"): who(),
    (V + "/users/<int:actor_id>", "DELETE"): who("admin"),
    (V + "/roles", "GET"): who("signed_in"),
    (V + "/assignments", "GET"): who("admin"),  # site-wide roles
    (V + "/assignments/<role>", "GET"): who("admin"),
    (V + "/assignments/<role>/<int:actor_id>", "POST"): who("admin"),
    (V + "/assignments/<role>/<int:actor_id>", "DELETE"): who("admin"),
    (V + "/audits", "GET"): who("admin"),  # the site's log; managers read theirs in the console
    (V + "/openapi.json", "GET"): who("everyone"),  # describes the API, holds no data
    # ---- projects
    (V + "/projects", "GET"): who("signed_in"),  # each sees the projects it holds a role in
    (V + "/projects", "POST"): who("admin"),
    (P, "GET"): who("members"),  # a device has no project.read (as in Central)
    (P, "PATCH"): who("managers"),
    (P + "/key", "POST"): who("managers"),  # managed encryption
    # ---- app users (tablets) and role assignments
    (P + "/app-users", "GET"): who("managers"),
    (P + "/app-users", "POST"): who("managers"),
    (P + "/app-users/<int:actor_id>/collect-settings", "GET"): who("managers"),
    (P + "/app-users/<int:actor_id>", "DELETE"): who("managers"),
    (P + "/assignments", "GET"): who("managers"),
    (P + "/assignments/<role>", "GET"): who("managers"),
    (P + "/assignments/<role>/<int:actor_id>", "POST"): who("managers"),
    (P + "/assignments/<role>/<int:actor_id>", "DELETE"): who("managers"),
    (F + "/assignments", "GET"): who("managers"),
    (F + "/assignments/<role>", "GET"): who("managers"),
    (F + "/assignments/<role>/<int:actor_id>", "POST"): who("managers"),
    (F + "/assignments/<role>/<int:actor_id>", "DELETE"): who("managers"),
    (F + "/public-links", "GET"): who("managers"),
    (F + "/public-links", "POST"): who("managers"),
    (F + "/public-links/<int:link_id>", "DELETE"): who("managers"),
    # ---- forms
    (P + "/forms", "GET"): who("members"),  # tablets list their forms with OpenRosa's formList
    (P + "/forms", "POST"): who("managers"),
    (F, "GET"): FORM_READERS,
    (F, "PATCH"): who("managers"),  # its state
    (F + ".xml", "GET"): FORM_READERS,
    # The spreadsheet asked for is the "simple" form's: the public link (to the household
    # form) may not read it.
    (F + ".xlsx", "GET"): who("members device", hide="other_device link"),
    (F + ".xls", "GET"): who("members device", hide="other_device link"),
    (F + "/versions", "GET"): FORM_READERS,
    (F + "/versions/<version>.xml", "GET"): FORM_READERS,
    (F + "/fields", "GET"): FORM_READERS,
    (F + "/versions/<version>/fields", "GET"): FORM_READERS,
    (F + "/attachments", "GET"): FORM_READERS,
    # ---- drafts
    (D, "GET"): DRAFT,
    (D, "POST"): DRAFT,
    (D + "/fields", "GET"): DRAFT,
    (D + "/attachments", "GET"): DRAFT,
    (D + "/attachments/<path:name>", "POST"): DRAFT,
    (D + "/attachments/<path:name>", "DELETE"): DRAFT,
    (D + "/publish", "POST"): DRAFT,
    (D, "DELETE"): DRAFT,
    # ---- records (published form, then the draft's test records), OData
    **{(F + "/submissions" + rest, method): row for (rest, method), row in SUBMISSIONS.items()},
    **{(D + "/submissions" + rest, method): row for (rest, method), row in SUBMISSIONS.items()},
    **{(F + rest, method): row for (rest, method), row in ODATA.items()},
    **{(D + rest, method): row for (rest, method), row in ODATA.items()},
    # Records sent again with other answers, kept for review: only those who may change the
    # records see and settle them (not in Central, which keeps no conflicts).
    (F + "/conflicts", "GET"): RECORD_CHANGES,
    (F + "/conflicts/<int:conflict_id>", "GET"): RECORD_CHANGES,
    (F + "/conflicts/<int:conflict_id>.xml", "GET"): RECORD_CHANGES,
    (F + "/conflicts/<int:conflict_id>", "PATCH"): RECORD_CHANGES,
    # The keys serve only to decrypt (submission.decrypt), which viewers may not; Central
    # lists them to anyone who may read the records.
    (F + "/submissions/keys", "GET"): who("managers"),
    # ---- exports (POST carries passphrases) and the cleaning log
    **{
        (F + "/submissions." + kind, method): who("readers")
        for kind in ("csv.zip", "csv", "xlsx", "geojson", "media.zip")
        for method in ("GET", "POST")
    },
    (F + "/corrections", "GET"): who("readers"),
    (F + "/corrections", "POST"): who("readers"),  # analysts upload cleaning logs
    (F + "/corrections/<int:correction_id>", "DELETE"): who("readers"),
    # ---- entity lists (devices get them only as form media, as in Central)
    (P + "/datasets", "GET"): who("readers"),
    (P + "/datasets", "POST"): who("managers"),
    (DATASET, "GET"): who("readers"),
    (DATASET, "PATCH"): who("managers"),
    (DATASET + "/properties", "POST"): who("managers"),
    (DATASET + "/entities", "GET"): who("readers"),
    (DATASET + "/entities", "POST"): who("managers"),
    (DATASET + "/entities/<uuid>", "GET"): who("readers"),
    (DATASET + "/entities/<uuid>", "PATCH"): who("managers"),
    (DATASET + "/entities/<uuid>/versions", "GET"): who("readers"),
    (DATASET + "/entities/<uuid>", "DELETE"): who("managers"),
    (DATASET + ".svc", "GET"): who("readers"),
    (DATASET + ".svc/$metadata", "GET"): who("readers"),
    (DATASET + ".svc/Entities", "GET"): who("readers"),
    # ---- OpenRosa: what ODK Collect calls
    (P + "/formList", "GET"): who("members device link", empty="other_device"),
    (F + "/manifest", "GET"): FORM_READERS,
    (F + "/attachments/<path:name>", "GET"): FORM_READERS,
    # Collect's check of the entities it created offline: who may list entities, or a device
    # reading a form that uses the list (the site's list is used by no form: see
    # test_entities_intake.py for a tablet's check).
    (DATASET + "/integrity", "GET"): who("readers"),
    # The preflight only says where to send and how much: anyone signed in gets its 204; the
    # 401 makes Collect send its credentials (Central answers it without any).
    (P + "/submission", "HEAD"): who("signed_in"),
    (P + "/submission", "GET"): who("signed_in"),
    # Someone who may not submit to the form is told it "does not exist on this server, or you
    # may not submit to it" (404.1), where Central says 401.
    (P + "/submission", "POST"): who("submitters", hide="viewer other_manager other_device"),
    # A draft on a tablet: its manager, or anyone holding the draft's own token
    # (/v1/test/<token>/..., see test_openrosa.py). Central lets submitters send draft records
    # here too; this server keeps drafts to those who may change the form.
    (D + "/formList", "GET"): DRAFT,
    (D + "/manifest", "GET"): DRAFT,
    (D + "/attachments/<path:name>", "GET"): DRAFT,
    (F + "/draft.xml", "GET"): DRAFT,
    (D + "/submission", "HEAD"): DRAFT,
    (D + "/submission", "GET"): DRAFT,
    (D + "/submission", "POST"): DRAFT,
    # ---- the console
    ("/", "GET"): who("everyone"),  # the projects, or the sign-in page
    ("/login", "GET"): who("everyone"),
    ("/login", "POST"): who("everyone"),
    ("/logout", "POST"): who("everyone"),
    ("/account/password", "GET"): who("signed_in"),
    ("/account/password", "POST"): who("signed_in"),
    ("/lang/<code>", "GET"): who("everyone"),
    ("/static/console/<path:filename>", "GET"): who("everyone"),
    ("/users", "GET"): who("admin"),
    ("/users", "POST"): who("admin"),
    # Asked for THIS project's log (?project=): the other project's manager reads only its own.
    ("/audit", "GET"): who("managers"),
    ("/projects", "GET"): who("everyone"),  # a redirect to /
    ("/projects", "POST"): who("admin"),
    (WP, "GET"): who("members"),
    (WP + "/archive", "POST"): who("managers"),
    (WP + "/members", "GET"): who("managers"),
    (WP + "/members", "POST"): who("managers"),
    (WP + "/members/<int:member_id>/remove", "POST"): who("managers"),
    (WP + "/app-users", "GET"): who("managers"),
    (WP + "/app-users", "POST"): who("managers"),
    (WP + "/app-users/<int:actor_id>", "GET"): who("managers"),
    (WP + "/app-users/<int:actor_id>/qr", "POST"): who("managers"),
    (WP + "/app-users/<int:actor_id>/forms", "POST"): who("managers"),
    (WP + "/app-users/<int:actor_id>/revoke", "POST"): who("managers"),
    (WP + "/forms", "POST"): who("managers"),
    (WF, "GET"): who("members"),
    (WF + "/versions/<int:version_id>/xform", "GET"): who("members"),
    (WF + "/versions/<int:version_id>/source", "GET"): who("members"),
    (WF + "/versions/<int:version_id>/media/<name>", "GET"): who("members"),
    (WF + "/versions/<int:version_id>/choices", "GET"): who("members"),
    (WF + "/draft/media", "POST"): who("managers"),
    (WF + "/draft/publish", "POST"): who("managers"),
    (WF + "/draft", "POST"): who("managers"),
    (WF + "/draft/delete", "POST"): who("managers"),
    (WF + "/state", "POST"): who("managers"),
    # Forms in the browser (ODK Web Forms): who may send records fills; managers try drafts
    # and edit records; a public link's page opens to whoever holds its token.
    (WF + "/fill", "GET"): who("admin manager formfill"),
    (WF + "/draft/fill", "GET"): who("managers"),
    (WF + "/submissions/<instance_id>/edit", "GET"): who("managers"),
    (WF + "/public-links", "POST"): who("managers"),
    (WF + "/public-links/<int:link_id>/revoke", "POST"): who("managers"),
    ("/-/<token>", "GET"): who("everyone"),
    (WF + "/submissions", "GET"): who("readers"),
    (WF + "/submissions/columns", "POST"): who("managers"),  # the table's answer columns
    (WF + "/submissions/<instance_id>", "GET"): who("readers"),
    (WF + "/submissions/<instance_id>/attachments/<name>", "GET"): who("readers"),
    (WF + "/submissions/review", "POST"): who("managers"),
    (WF + "/submissions/<instance_id>/review", "POST"): who("managers"),
    (WF + "/submissions/<instance_id>/comments", "POST"): who("managers"),
    (WF + "/conflicts", "GET"): who("managers"),
    (WF + "/conflicts/<int:conflict_id>", "GET"): who("managers"),
    (WF + "/conflicts/<int:conflict_id>/resolve", "POST"): who("managers"),
    (WF + "/conflicts/<int:conflict_id>/files/<name>", "GET"): who("managers"),
    (WF + "/overview", "GET"): who("readers"),
    (WF + "/overview/choices", "GET"): who("readers"),
    (WF + "/export", "GET"): who("readers"),
    (WF + "/export/download", "GET"): who("readers"),
    (WF + "/corrections", "POST"): who("readers"),
    (WF + "/corrections/<int:correction_id>/revoke", "POST"): who("readers"),
    # ---- health
    ("/healthz", "GET"): who("everyone"),
    ("/readyz", "GET"): who("everyone"),
    # ---- last: deleting the project
    (P, "DELETE"): who("admin"),
}

# Answered outside Flask's routing (WSGI middleware), so not a URL rule: open while
# MERIT_METRICS_TOKEN is unset, as in the tests; with a token, see the last test.
OUTSIDE_ROUTING: dict[tuple[str, str], dict[str, str]] = {
    ("/metrics", "GET"): who("everyone"),
}

# Allowed requests all succeed (2xx, 3xx) on this site, but for these answers, given after the
# access check on purpose: (endpoint, principal) -> status.
NOT_DONE_BY_DESIGN = {
    # No bearer session to restore: a device's token, or no credentials (Central: 404 too).
    **{("api.restore_session", p): 404 for p in ("anonymous", *DEVICES)},
    # A passphrase too short (400.21): turning managed encryption on would give every form of
    # the site a new, encrypted version under the walk's feet.
    **{("api.enable_managed_encryption", p): 400 for p in PRINCIPALS},
    # A wrong current password (a 400 page): changing it would end the principal's sessions.
    **{("web.password_post", p): 400 for p in PRINCIPALS},
}


def area(endpoint: str) -> str:
    """Return the area of an endpoint: api, openrosa, console or open."""
    blueprint = endpoint.split(".", 1)[0]
    return {"api": "api", "openrosa": "openrosa", "web": "console"}.get(blueprint, "open")


# ---- the site ------------------------------------------------------------------------------

CHOICES_FORM = """
| survey |
|        | type            | name | label |
|        | select_one sexe | sexe | Sexe  |
| choices |
|         | list_name | name | label |
|         | sexe      | f    | Femme |
|         | sexe      | m    | Homme |
| settings |
|          | form_id | version |
|          | choix   | 1       |
"""


@dataclass
class Site:
    """The objects the walk substitutes into the rules, and each principal's credentials."""

    project_id: int
    people: dict[str, Any]
    tokens: dict[str, str]  # app users' path tokens
    app_users: dict[str, int]  # app users' actor ids
    form_ids: dict[str, int]
    versions: dict[str, int]  # published FormVersion ids
    record: str
    spare_record: str
    draft_record: str
    spare_draft_record: str
    entity: str
    corrections: list[int]
    conflicts: list[int]  # two payloads sent again for ``record``: API, console
    extra_session: str
    draft_token: str
    links: dict[str, int] = field(default_factory=dict)  # public links' actor ids
    bearer: dict[str, str] = field(default_factory=dict)
    cookie: dict[str, tuple[str, str]] = field(default_factory=dict)  # (session, csrf)
    spare_cookie: dict[str, tuple[str, str]] = field(default_factory=dict)


def _bearer(client: FlaskClient, email: str) -> str:
    response = client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json["token"]


def _sign_in(app: Flask, email: str) -> tuple[str, str]:
    """Sign in to the console as test_console.py does; return the session cookie and CSRF."""
    browser = app.test_client()
    page = browser.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)[1]
    signed = browser.post(
        "/login", data={"email": email, "password": PASSWORD, "login_token": token}
    )
    assert signed.status_code == 303, signed.text
    password_page = browser.get("/account/password")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', password_page.text)[1]
    return browser.get_cookie("merit_session").value, csrf


def _send_record(client: FlaskClient, url: str, instance_id: str) -> None:
    sent = client.post(
        url,
        data=multipart(record(instance_id, audit=None), {PHOTO: jpeg(1)}),
        headers=OPENROSA,
    )
    assert sent.status_code == 201, sent.text


def build_site(app: Flask, client: FlaskClient, db_session, principal: str) -> Site:
    """A project with everything in it, another project, and the principal's credentials."""
    project = factories.project(db_session)
    other = factories.project(db_session, "Autre projet")
    p = project.id
    people = {
        "admin": factories.user(db_session, "admin@example.org", role="admin"),
        "manager": factories.user(db_session, "manager@example.org", role="manager", project_id=p),
        "viewer": factories.user(db_session, "viewer@example.org", role="viewer", project_id=p),
        "formfill": factories.user(
            db_session, "collector@example.org", role="formfill", project_id=p
        ),
        "other_manager": factories.user(
            db_session, "outsider@example.org", role="manager", project_id=other.id
        ),
        # Accounts that user-management routes act on.
        "extra": factories.user(db_session, "extra@example.org"),
        "doomed": factories.user(db_session, "doomed@example.org"),
    }
    app_users, tokens = {}, {}
    for name, project_id in (
        ("device", p),
        ("other_device", other.id),
        ("spare", p),  # assignments act on it
        ("lost_api", p),  # deleted through the API
        ("lost_web", p),  # revoked in the console
    ):
        app_user, token = factories.app_user(db_session, project_id, name)
        app_users[name], tokens[name] = app_user.actor_id, token
    menage = publish_form(db_session, p, app_user_ids=(app_users["device"],))
    publish_form(db_session, other.id, app_user_ids=(app_users["other_device"],))
    publish_form(db_session, p, form_id="brouillon", draft=True)  # published through the API
    publish_form(db_session, p, form_id="brouillon_web", draft=True)  # and in the console
    admin = {"Authorization": f"Bearer {_bearer(client, 'admin@example.org')}"}
    base = f"/v1/projects/{p}"

    # A form uploaded as an XLSForm (its spreadsheet can be downloaded), assigned to the tablet.
    uploaded = client.post(
        f"{base}/forms?publish=true",
        data=workbooks.xlsx(workbooks.simple("1")),
        headers={**admin, "Content-Type": workbooks.XLSX_TYPE},
    )
    assert uploaded.status_code == 200, uploaded.text
    assigned = client.post(
        f"{base}/forms/simple/assignments/app-user/{app_users['device']}", headers=admin
    )
    assert assigned.status_code == 200, assigned.text
    # A form with a choice list, whose list the console shows on a page of its own.
    with_choices = client.post(
        f"{base}/forms?publish=true",
        data=workbooks.xlsx(CHOICES_FORM),
        headers={**admin, "Content-Type": workbooks.XLSX_TYPE},
    )
    assert with_choices.status_code == 200, with_choices.text

    # The household form's draft (a copy of the published version, with its media).
    assert client.post(f"{base}/forms/{FORM_ID}/draft", headers=admin).status_code == 200
    draft_token = client.get(f"{base}/forms/{FORM_ID}/draft", headers=admin).json["draftToken"]

    # Records with a photo, sent by the tablet; test records sent to the draft with its token.
    main, spare, draft_main, draft_spare = (new_instance_id() for _ in range(4))
    for instance_id in (main, spare):
        _send_record(client, f"/v1/key/{tokens['device']}/projects/{p}/submission", instance_id)
    draft_url = f"/v1/test/{draft_token}/projects/{p}/forms/{FORM_ID}/draft/submission"
    for instance_id in (draft_main, draft_spare):
        _send_record(client, draft_url, instance_id)
    # Two payloads sent again for the main record with other answers: kept as conflicts.
    for age in ("35", "36"):
        refused = client.post(
            f"/v1/key/{tokens['device']}/projects/{p}/submission",
            data=multipart(record(main, age=age, audit=None), {PHOTO: jpeg(1)}),
            headers=OPENROSA,
        )
        assert refused.status_code == 409, refused.text
    for path in (f"submissions/{main}", f"draft/submissions/{draft_main}"):
        commented = client.post(
            f"{base}/forms/{FORM_ID}/{path}/comments", json={"body": "Photo floue"}, headers=admin
        )
        assert commented.status_code == 200, commented.text

    # An entity list with a property and an entity.
    for url, body in (
        (f"{base}/datasets", {"name": "villages"}),
        (f"{base}/datasets/villages/properties", {"name": "region"}),
    ):
        assert client.post(url, json=body, headers=admin).status_code == 200
    entity = client.post(
        f"{base}/datasets/villages/entities",
        json={"label": "Ségou", "data": {"region": "ML04"}},
        headers=admin,
    )
    assert entity.status_code == 200, entity.text

    # Public links to the household form: the link principal's, and two to revoke.
    links = {}
    for name in ("link", "doomed_api", "doomed_web"):
        created = client.post(
            f"{base}/forms/{FORM_ID}/public-links", json={"displayName": name}, headers=admin
        )
        assert created.status_code == 200, created.text
        links[name], tokens[name] = created.json["id"], created.json["token"]

    # A cleaning log of two corrections (one to revoke through the API, one in the console).
    log = (
        "KEY,column,old value,new value,reason\n"
        f"{main},age,34,35,typo\n{main},name,Awa Traoré,Awa Traore,accent\n"
    )
    cleaned = client.post(
        f"{base}/forms/{FORM_ID}/corrections",
        data=log.encode(),
        headers={**admin, "Content-Type": "text/csv"},
    )
    assert cleaned.status_code == 200, cleaned.text
    listed = client.get(f"{base}/forms/{FORM_ID}/corrections", headers=admin).json

    forms = {
        f.xml_form_id: f for f in db_session.scalars(sa.select(Form).where(Form.project_id == p))
    }
    site = Site(
        project_id=p,
        people=people,
        tokens=tokens,
        app_users=app_users,
        form_ids={name: form.id for name, form in forms.items()},
        versions={
            "menage": menage.current_version_id,
            "simple": forms["simple"].current_version_id,
            "choix": forms["choix"].current_version_id,
        },
        record=main,
        spare_record=spare,
        draft_record=draft_main,
        spare_draft_record=draft_spare,
        entity=entity.json["uuid"],
        corrections=[c["id"] for c in listed],
        conflicts=list(
            db_session.scalars(
                sa.select(SubmissionConflict.id)
                .where(SubmissionConflict.instance_id == main)
                .order_by(SubmissionConflict.id)
            )
        ),
        extra_session=_bearer(client, "extra@example.org"),
        draft_token=draft_token,
        links=links,
    )
    assert len(site.corrections) == 2
    assert len(site.conflicts) == 2
    if principal in GROUPS["signed_in"] and principal not in DEVICES:
        email = people[principal].email
        site.bearer[principal] = _bearer(client, email)
        site.cookie[principal] = _sign_in(app, email)
        site.spare_cookie[principal] = _sign_in(app, email)  # the one /logout ends
    return site


# ---- what each check sends ------------------------------------------------------------------


def _values(site: Site, endpoint: str) -> dict[str, Any]:
    """The values substituted into an endpoint's rule: the site's objects, the right ones."""
    values: dict[str, Any] = {
        "project_id": site.project_id,
        "xml_form_id": FORM_ID,
        "instance_id": site.record,
        "version_id": site.record,  # a record's version, named by its instanceID
        "version": VERSION,
        "name": PHOTO,
        "subpath": "Submissions",
        "uuid": site.entity,
        "token": site.extra_session,
        "code": "en",
        "filename": "console.css",
        "member_id": site.people["extra"].actor_id,
        "correction_id": site.corrections[0],
        "conflict_id": site.conflicts[0],
    }
    name = endpoint.split(".", 1)[1]
    if name.startswith("draft_"):  # a draft's test records
        values["instance_id"] = values["version_id"] = site.draft_record
    if "dataset" in name or "entit" in name:
        values["name"] = "villages"
    values.update(_TARGETS.get(endpoint, lambda _site: {})(site))
    return values


# Objects a route acts on, where they are not the defaults above.
_TARGETS: dict[str, Callable[[Site], dict[str, Any]]] = {
    "api.get_user": lambda s: {"actor_id": s.people["extra"].actor_id},
    "api.update_user": lambda s: {"actor_id": s.people["extra"].actor_id},
    "api.change_password": lambda s: {"actor_id": s.people["extra"].actor_id},
    "api.delete_user": lambda s: {"actor_id": s.people["doomed"].actor_id},
    "api.list_site_assignments": lambda s: {"role": "admin"},
    "api.assign_site_role": lambda s: {"role": "admin", "actor_id": s.people["extra"].actor_id},
    "api.unassign_site_role": lambda s: {"role": "admin", "actor_id": s.people["extra"].actor_id},
    "api.collect_settings": lambda s: {"actor_id": s.app_users["device"]},
    "api.delete_app_user": lambda s: {"actor_id": s.app_users["lost_api"]},
    "api.list_project_assignments": lambda s: {"role": "viewer"},
    "api.assign_on_project": lambda s: {"role": "viewer", "actor_id": s.people["extra"].actor_id},
    "api.unassign_on_project": lambda s: {
        "role": "viewer",
        "actor_id": s.people["extra"].actor_id,
    },
    "api.list_form_assignments": lambda s: {"role": "app-user"},
    "api.assign_on_form": lambda s: {"role": "app-user", "actor_id": s.app_users["spare"]},
    "api.unassign_on_form": lambda s: {"role": "app-user", "actor_id": s.app_users["spare"]},
    "api.form_source": lambda s: {"xml_form_id": "simple"},
    "api.create_draft": lambda s: {"xml_form_id": "simple"},
    "api.delete_draft": lambda s: {"xml_form_id": "simple"},
    "api.publish_draft": lambda s: {"xml_form_id": "brouillon"},
    "api.upload_draft_attachment": lambda s: {"name": "villages.csv"},
    "api.clear_draft_attachment": lambda s: {"name": "villages.csv"},
    "api.delete_submission": lambda s: {"instance_id": s.spare_record},
    "api.restore_submission": lambda s: {"instance_id": s.spare_record},
    "api.draft_delete_submission": lambda s: {"instance_id": s.spare_draft_record},
    "api.draft_restore_submission": lambda s: {"instance_id": s.spare_draft_record},
    "openrosa.form_attachment": lambda s: {"name": "villages.csv"},
    "openrosa.draft_attachment": lambda s: {"name": "villages.csv"},
    "web.download_xform": lambda s: {"version_id": s.versions["menage"]},
    "web.download_media": lambda s: {"version_id": s.versions["menage"], "name": "villages.csv"},
    "web.download_source": lambda s: {"xml_form_id": "simple", "version_id": s.versions["simple"]},
    "web.choice_list": lambda s: {"xml_form_id": "choix", "version_id": s.versions["choix"]},
    "web.app_user": lambda s: {"actor_id": s.app_users["device"]},
    "web.app_user_qr": lambda s: {"actor_id": s.app_users["device"]},
    "web.app_user_forms": lambda s: {"actor_id": s.app_users["spare"]},
    "web.revoke_app_user": lambda s: {"actor_id": s.app_users["lost_web"]},
    "web.new_draft": lambda s: {"xml_form_id": "simple"},
    "web.discard_draft": lambda s: {"xml_form_id": "simple"},
    "web.publish": lambda s: {"xml_form_id": "brouillon_web"},
    "web.revoke_correction": lambda s: {"correction_id": s.corrections[1]},
    "web.resolve_conflict": lambda s: {"conflict_id": s.conflicts[1]},
    "api.delete_public_link": lambda s: {"link_id": s.links["doomed_api"]},
    "web.revoke_public_link": lambda s: {"link_id": s.links["doomed_web"]},
    "web.public_form": lambda s: {"token": s.tokens["link"]},
}

# Query strings some checks need.
_QUERIES = {
    "api.update_entity": "?force=true",
    "web.audit_log": "?project={project_id}",
    "web.export_download": "?format=csv",
    "web.choice_list": "?list=sexe",
    "web.form_overview_choices": "?field=/data/village",
}


def _xform(form_id: str) -> bytes:
    return XFORM.format(form_id=form_id, version="1").encode()


def _record_xml(**options: Any) -> dict[str, Any]:
    return {"data": record(new_instance_id(), **options), "content_type": "application/xml"}


def _openrosa_record() -> dict[str, Any]:
    xml = record(new_instance_id(), audit=None)
    return {"data": multipart(xml, {PHOTO: jpeg(2)}), "headers": OPENROSA}


def _corrections(instance_id: str, column: str, old: str, new: str) -> bytes:
    return (
        f"KEY,column,old value,new value,reason\n{instance_id},{column},{old},{new},vu\n".encode()
    )


# Bodies of the checks that send one (a fresh one for every request).
_BODIES: dict[str, Callable[[Site], dict[str, Any]]] = {
    "api.create_session": lambda s: {"json": {"email": "extra@example.org", "password": PASSWORD}},
    "api.create_user": lambda s: {"json": {"email": "new@example.org", "password": "0123456789ab"}},
    "api.update_user": lambda s: {"json": {"displayName": "Extra"}},
    "api.change_password": lambda s: {"json": {"old": PASSWORD, "new": "0123456789abc"}},
    "api.create_project": lambda s: {"json": {"name": "Enquête Tombouctou"}},
    "api.update_project": lambda s: {"json": {"description": "Deuxième passage"}},
    # Too short a passphrase (see NOT_DONE_BY_DESIGN).
    "api.enable_managed_encryption": lambda s: {"json": {"passphrase": "court"}},
    "api.create_app_user": lambda s: {"json": {"displayName": "Tablette 9"}},
    "api.create_public_link": lambda s: {"json": {"displayName": "Saisie au bureau"}},
    "web.create_public_link": lambda s: {"data": {"name": "Saisie au bureau", "once": "1"}},
    "api.create_form": lambda s: {"data": _xform("nouveau"), "content_type": "application/xml"},
    "api.update_form": lambda s: {"json": {"state": "open"}},
    "api.upload_draft_attachment": lambda s: {"data": VILLAGES_CSV, "content_type": "text/csv"},
    "api.create_submission": lambda s: _record_xml(),
    "api.draft_create_submission": lambda s: _record_xml(),
    "api.edit_submission": lambda s: _record_xml(deprecated_id=s.record),
    "api.draft_edit_submission": lambda s: _record_xml(deprecated_id=s.draft_record),
    "api.review_submission": lambda s: {"json": {"reviewState": "approved"}},
    "api.resolve_conflict": lambda s: {"json": {"resolution": "keepFirst"}},
    "api.draft_review_submission": lambda s: {"json": {"reviewState": "approved"}},
    "api.add_comment": lambda s: {"json": {"body": "Vérifier l'âge"}},
    "api.draft_add_comment": lambda s: {"json": {"body": "Vérifier l'âge"}},
    "api.upload_attachment": lambda s: {"data": jpeg(3), "content_type": "image/jpeg"},
    "api.draft_upload_attachment": lambda s: {"data": jpeg(3), "content_type": "image/jpeg"},
    "api.upload_corrections": lambda s: {
        "data": _corrections(s.spare_record, "age", "34", "40"),
        "content_type": "text/csv",
    },
    "api.create_dataset": lambda s: {"json": {"name": "ecoles"}},
    "api.update_dataset": lambda s: {"json": {"approvalRequired": True}},
    "api.add_dataset_property": lambda s: {"json": {"name": "population"}},
    "api.create_entities": lambda s: {"json": {"label": "Bla", "data": {"region": "ML04"}}},
    "api.update_entity": lambda s: {"json": {"label": "Ségou-ville", "data": {"region": "ML04"}}},
    "openrosa.submission": lambda s: _openrosa_record(),
    "openrosa.draft_submission": lambda s: _openrosa_record(),
    "web.password_post": lambda s: {
        "data": {
            "old_password": "not the password",  # see NOT_DONE_BY_DESIGN
            "new_password": "a new long password",
            "confirm_password": "a new long password",
        }
    },
    "web.create_user": lambda s: {
        "data": {"email": "web-new@example.org", "password": "0123456789ab"}
    },
    "web.create_project": lambda s: {"data": {"name": "Enquête Kayes"}},
    "web.archive_project": lambda s: {"data": {"archived": "0"}},  # active again: no change
    "web.add_project_member": lambda s: {
        "data": {"email": "extra@example.org", "role": "formfill"}
    },
    "web.remove_project_member": lambda s: {"data": {"role": "formfill"}},
    "web.create_app_user": lambda s: {"data": {"name": "Tablette 10"}},
    "web.app_user_qr": lambda s: {"data": {"autosend": "wifi_only"}},
    "web.app_user_forms": lambda s: {"data": {"form_id": str(s.form_ids[FORM_ID])}},
    "web.upload_form": lambda s: {
        "data": {"xlsform": (io.BytesIO(_xform("nouveau_web")), "nouveau_web.xml", "text/xml")}
    },
    "web.new_draft": lambda s: {"data": {"copy": "1"}},
    "web.attach_media": lambda s: {
        "data": {"name": "villages.csv", "file": (io.BytesIO(VILLAGES_CSV), "villages.csv")}
    },
    "web.set_state": lambda s: {"data": {"state": "open"}},
    "web.submission_columns": lambda s: {"data": {"column": "/data/name"}},
    "web.bulk_review": lambda s: {"data": {"state": "approved", "instance_id": s.record}},
    "web.review": lambda s: {"data": {"state": "hasIssues", "comment": "Âge à vérifier"}},
    "web.comment": lambda s: {"data": {"body": "Vu avec le superviseur"}},
    "web.resolve_conflict": lambda s: {"data": {"resolution": "discard"}},
    "web.upload_corrections": lambda s: {
        "data": {
            "file": (
                io.BytesIO(_corrections(s.spare_record, "name", "Awa Traoré", "Awa T.")),
                "nettoyage.csv",
            )
        }
    },
}

# When a check runs in a walk: reads, then changes, then deletions; then what needs a deletion
# or a deleted draft first; deleting the project last.
_PHASES = {"GET": 0, "HEAD": 0, "POST": 1, "PUT": 1, "PATCH": 1, "DELETE": 2}
_LATER = {
    "api.restore_submission": 3,  # the record the DELETE put in the trash
    "api.draft_restore_submission": 3,
    "web.new_draft": 3,  # on the form whose draft the API made and deleted
    "web.discard_draft": 3,
    "api.delete_project": 9,
}


@dataclass(frozen=True)
class Check:
    rule: str
    endpoint: str
    method: str
    row: dict[str, str]


def walk(app: Flask) -> list[Check]:
    """Every (rule, method) of the matrix, in the order a walk sends them."""
    endpoints = {
        (rule.rule, method): rule.endpoint
        for rule in app.url_map.iter_rules()
        for method in rule.methods
    }
    checks = [
        Check(rule, endpoints.get((rule, method), "wsgi.metrics"), method, row)
        for (rule, method), row in {**MATRIX, **OUTSIDE_ROUTING}.items()
    ]
    ranked = sorted(
        enumerate(checks),
        key=lambda pair: (_LATER.get(pair[1].endpoint, _PHASES[pair[1].method]), pair[0]),
    )
    return [check for _index, check in ranked]


def _url(check: Check, site: Site) -> str:
    values = _values(site, check.endpoint)
    path = re.sub(
        r"<(?:[^:<>]+:)?([^<>]+)>",
        lambda m: quote(str(values[m[1]]), safe=":"),
        check.rule,
    )
    return path + _QUERIES.get(check.endpoint, "").format(**values)


def send(app: Flask, check: Check, site: Site, principal: str):  # type: ignore[no-untyped-def]
    """Send one check's request as the principal, with the credentials its area takes."""
    url = _url(check, site)
    options = _BODIES.get(check.endpoint, lambda _site: {})(site)
    headers = dict(options.pop("headers", {}))
    console = area(check.endpoint) == "console"
    cookies = []
    if principal in DEVICES:
        url = f"/v1/key/{site.tokens[principal]}" + url.removeprefix("/v1")
    elif principal != "anonymous" and console:
        session, csrf = (site.spare_cookie if check.endpoint == "web.logout" else site.cookie)[
            principal
        ]
        cookies.append(f"merit_session={session}")
        if check.method == "POST":
            options.setdefault("data", {})["csrf_token"] = csrf
    elif principal != "anonymous":
        headers["Authorization"] = f"Bearer {site.bearer[principal]}"
    if check.endpoint == "web.login_post":
        # The sign-in form's own token, from the sign-in page (a cookie and a field).
        page = app.test_client().get("/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)[1]
        cookies.append(f"merit_login={token}")
        options["data"] = {
            **options.get("data", {}),
            "email": "extra@example.org",
            "password": PASSWORD,
            "login_token": token,
        }
    if cookies:
        headers["Cookie"] = "; ".join(cookies)
    browser = app.test_client(use_cookies=False)
    response = browser.open(url, method=check.method, headers=headers, **options)
    response.get_data()  # streamed answers (exports) hold their request until read
    response.close()
    return response


def verdict(check: Check, principal: str, response) -> str | None:  # type: ignore[no-untyped-def]
    """Return what is wrong with the answer (None when it is what the matrix says)."""
    expected = check.row[principal]
    status = response.status_code
    to_sign_in = status in (302, 303) and response.headers.get("Location", "").startswith("/login")
    said = f"{check.method} {check.rule} [{check.endpoint}] as {principal}: expected {expected}"
    got = f"got {status} {response.get_data()[:200]!r}"
    if expected in (ALLOW, EMPTY):
        if status in (401, 403) or to_sign_in or status >= 500:
            return f"{said}, {got}"
        if status >= 400 and NOT_DONE_BY_DESIGN.get((check.endpoint, principal)) != status:
            return f"{said} (done, on the site's real objects), {got}"
        if expected == EMPTY and b"<xform>" in response.get_data():
            return f"{said} (nothing of this project listed), {got}"
        return None
    if expected == HIDE:
        return None if status == 404 else f"{said} (404), {got}"
    if area(check.endpoint) == "console" and principal == "anonymous":
        if check.method == "GET":
            location = response.headers.get("Location", "")
            ok = status == 303 and location.startswith("/login?next=")
            return None if ok else f"{said} (303 to /login?next=), {got}"
        return None if status == 401 else f"{said} (401 page), {got}"
    wanted = 401 if principal == "anonymous" else 403
    return None if status == wanted else f"{said} ({wanted}), {got}"


def credentials(site: Site) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Tokens that open routes by themselves, what each is, and who may be shown it.

    The draft's token opens the draft's OpenRosa routes to whoever holds it
    (``/v1/test/<token>/...``): only those the matrix lets at the draft may see it. A tablet's
    token is the tablet: only those who manage the project's tablets may see it (and the tablet
    its own). Another account's session: nobody.
    """
    draft_row = MATRIX[(F + "/draft.xml", "GET")]
    draft_readers = tuple(p for p, cell in draft_row.items() if cell == ALLOW)
    managers = GROUPS["managers"]
    return {
        site.draft_token: ("the draft's token", draft_readers),
        site.tokens["device"]: ("the tablet's token", (*managers, "device")),
        site.tokens["spare"]: ("a tablet's token", managers),
        site.tokens["lost_api"]: ("a tablet's token", managers),
        site.tokens["lost_web"]: ("a tablet's token", managers),
        site.tokens["other_device"]: ("another project's tablet token", ("other_device",)),
        site.tokens["link"]: ("the public link's token", (*managers, "link")),
        site.tokens["doomed_api"]: ("a public link's token", managers),
        site.tokens["doomed_web"]: ("a public link's token", managers),
        site.extra_session: ("another account's session", ()),
    }


def leak(check: Check, principal: str, response, secrets) -> str | None:  # type: ignore[no-untyped-def]
    """Return what the answer shows that the principal may not hold (None when nothing)."""
    body = response.get_data() + str(response.headers).encode()
    for token, (what, allowed) in secrets.items():
        if check.endpoint == "web.public_form" and what == "the public link's token":
            continue  # its page is opened with it: whoever sees the page holds it already
        if principal not in allowed and token.encode() in body:
            return f"{check.method} {check.rule} [{check.endpoint}] shows {principal} {what}"
    return None


def rights(db_session) -> tuple[Any, int]:  # type: ignore[no-untyped-def]
    """Return who may do what right now (accounts, passwords, roles, tablets, projects) and
    the number of audit events, read afresh."""
    db_session.rollback()  # a new snapshot: see what the request committed
    queries = (
        "SELECT actor_id, role_id, actee FROM assignments",
        "SELECT id, type, deleted_at IS NULL FROM actors",
        "SELECT actor_id, email, password_hash, digest_ha1 FROM users",
        "SELECT actor_id, project_id, token_hash, revoked_at IS NULL FROM app_users",
        "SELECT actor_id, form_id, token_hash, revoked_at IS NULL FROM public_links",
        "SELECT id, deleted_at IS NULL, archived FROM projects",
    )
    state = tuple(frozenset(map(tuple, db_session.execute(sa.text(q)).all())) for q in queries)
    events = db_session.execute(sa.text("SELECT COUNT(*) FROM audit_events")).scalar_one()
    return state, events


def unaudited(check: Check, principal: str, before, after) -> str | None:  # type: ignore[no-untyped-def]
    """Return what is wrong when the request changed who may do what without an audit event.

    Issue 16: creating users, giving roles, creating and deleting app users through /v1 left no
    trace. Every change of rights, through any route, writes an event.
    """
    if before[0] != after[0] and after[1] <= before[1]:
        changed = [
            name
            for name, old, new in zip(
                ("roles", "actors", "accounts", "tablets", "public links", "projects"),
                before[0],
                after[0],
                strict=True,
            )
            if old != new
        ]
        return (
            f"{check.method} {check.rule} [{check.endpoint}] as {principal} changed "
            f"{', '.join(changed)} without an audit event"
        )
    return None


# ---- the tests ------------------------------------------------------------------------------


def test_the_matrix_names_every_rule_and_method_of_the_app_and_nothing_else(bare_app):
    served = {
        (rule.rule, method)
        for rule in bare_app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    accepted = {
        (rule.rule, method) for rule in bare_app.url_map.iter_rules() for method in rule.methods
    }
    missing = sorted(served - set(MATRIX))
    assert not missing, f"routes the matrix does not classify yet: {missing}"
    stale = sorted(set(MATRIX) - accepted)
    assert not stale, f"the matrix names routes the app no longer has: {stale}"
    # HEAD is listed only where a route declares it (OpenRosa's preflights), beside its GET.
    heads = sorted(rule for rule, method in MATRIX if method == "HEAD")
    assert heads == sorted([P + "/submission", D + "/submission"])
    assert all((rule, "GET") in MATRIX for rule in heads)
    for key, row in {**MATRIX, **OUTSIDE_ROUTING}.items():
        assert set(row) == set(PRINCIPALS), key
        assert set(row.values()) <= {ALLOW, DENY, HIDE, EMPTY}, key
    adapter = bare_app.url_map.bind("localhost")
    for path, method in OUTSIDE_ROUTING:
        with pytest.raises(NotFound):
            adapter.match(path, method=method)


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_every_route_answers_each_principal_as_the_matrix_says(app, client, db_session, principal):
    site = build_site(app, client, db_session, principal)
    checks = [
        check
        for check in walk(app)
        # A device's token opens /v1 only: the console and the health routes are out of reach.
        if principal not in DEVICES or check.rule.startswith("/v1/")
    ]
    secrets = credentials(site)
    wrong = []
    for check in checks:
        before = rights(db_session)
        response = send(app, check, site, principal)
        for problem in (
            verdict(check, principal, response),
            leak(check, principal, response, secrets),
            unaudited(check, principal, before, rights(db_session)),
        ):
            if problem is not None:
                wrong.append(problem)

    assert not wrong, f"{len(wrong)} of {len(checks)} checks:\n" + "\n".join(wrong)
    applicable = len(MATRIX) + len(OUTSIDE_ROUTING)
    if principal in DEVICES:
        applicable = sum(1 for rule, _method in MATRIX if rule.startswith("/v1/"))
    assert len(checks) == applicable


@pytest.mark.parametrize("app_overrides", [{"METRICS_TOKEN": "prometheus-only"}])
def test_metrics_with_a_token_opens_to_that_token_and_to_no_role(
    app, client, db_session, app_overrides
):
    factories.user(db_session, "admin@example.org", role="admin")
    admin = _bearer(client, "admin@example.org")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).status_code == 401
    opened = client.get("/metrics", headers={"Authorization": "Bearer prometheus-only"})
    assert opened.status_code == 200
    assert b"merit_" in opened.data
