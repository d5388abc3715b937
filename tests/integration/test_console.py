"""The console through Flask's test client: who may open and do what, CSRF, sign-in, bad input.

The browser tests (tests/browser) prove the pages work in Chromium; these check every page's
access rules for each role, the CSRF token on every route that changes something, and that
bad input gets a page with a clear message, never a 500.
"""

from __future__ import annotations

import html
import io
import re

import pytest
import sqlalchemy as sa

from server.audit.models import AuditEvent
from server.auth import services as accounts
from server.auth.models import AppUser, Assignment, AuthSession
from server.forms.models import Form
from server.submissions.models import Submission
from tests.fixtures.forms import workbooks
from tests.support import factories
from tests.support.openrosa import (
    OPENROSA,
    jpeg,
    multipart,
    new_instance_id,
    publish_form,
    record,
)

PASSWORD = factories.PASSWORD
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


# ---- helpers ---------------------------------------------------------------------------------


def sign_in(client, email: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    """Sign in through the sign-in form; return the response to the form's POST."""
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)[1]
    return client.post("/login", data={"email": email, "password": password, "login_token": token})


def csrf_of(client) -> str:  # type: ignore[no-untyped-def]
    """Return the CSRF token printed in the signed-in person's pages."""
    page = client.get("/account/password")
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]


def alert(response) -> str:  # type: ignore[no-untyped-def]
    """Return the text of the page's alert (its error message)."""
    found = re.search(r'role="alert">(.*?)</', response.text, re.S)
    assert found, response.text[:2000]
    return found[1].strip()


@pytest.fixture
def site(app, client, db_session):
    """A project with a form, a record with a photo, and one person per role (plus outsiders)."""
    project = factories.project(db_session)
    other = factories.project(db_session, "Autre projet")
    app_user, token = factories.app_user(db_session, project.id)
    form = publish_form(db_session, project.id, app_user_ids=(app_user.actor_id,))
    instance_id = new_instance_id()
    sent = client.post(
        f"/v1/key/{token}/projects/{project.id}/submission",
        data=multipart(record(instance_id, audit=None), {"1715090512345.jpg": jpeg(1)}),
    )
    assert sent.status_code == 201, sent.text
    people = {
        "admin": factories.user(db_session, "admin@example.org", role="admin"),
        "manager": factories.user(
            db_session, "manager@example.org", role="manager", project_id=project.id
        ),
        "viewer": factories.user(
            db_session, "viewer@example.org", role="viewer", project_id=project.id
        ),
        "formfill": factories.user(
            db_session, "collector@example.org", role="formfill", project_id=project.id
        ),
        "outsider": factories.user(
            db_session, "outsider@example.org", role="manager", project_id=other.id
        ),
    }
    return {
        "project": project,
        "other": other,
        "form": form,
        "instance_id": instance_id,
        "app_user": app_user,
        "people": people,
    }


def as_role(client, site, role: str) -> str:  # type: ignore[no-untyped-def]
    """Sign the client in as a role of the site; return its CSRF token ("" when anonymous)."""
    if role == "anonymous":
        return ""
    assert sign_in(client, site["people"][role].email).status_code == 303
    return csrf_of(client)


# ---- reading pages ---------------------------------------------------------------------------

ROLES = ("anonymous", "formfill", "viewer", "manager", "admin", "outsider")


def _pages(site) -> dict[str, dict[str, int]]:
    p = site["project"].id
    f = f"/projects/{p}/forms/menage"
    record_page = f"{f}/submissions/{site['instance_id']}"
    app_user = f"/projects/{p}/app-users/{site['app_user'].actor_id}"
    every = dict.fromkeys(ROLES[1:], 200)
    managers = {"formfill": 403, "viewer": 403, "manager": 200, "admin": 200, "outsider": 403}
    readers = {"formfill": 403, "viewer": 200, "manager": 200, "admin": 200, "outsider": 403}
    project = {"formfill": 200, "viewer": 200, "manager": 200, "admin": 200, "outsider": 403}
    return {
        "/": every,
        "/account/password": every,
        "/users": {**dict.fromkeys(ROLES[1:], 403), "admin": 200},
        "/audit": {"formfill": 403, "viewer": 403, "manager": 200, "admin": 200, "outsider": 200},
        f"/audit?project={p}": managers,
        f"/projects/{p}": project,
        f"/projects/{p}/members": managers,
        f"/projects/{p}/app-users": managers,
        app_user: managers,
        f: project,
        f"{f}/submissions": readers,
        record_page: readers,
        f"{record_page}/attachments/1715090512345.jpg": readers,
        f"{f}/overview": readers,
        f"{f}/export": readers,
        f"{f}/export/download?format=csv": readers,
    }


@pytest.mark.parametrize("role", ROLES)
def test_each_page_opens_for_the_roles_that_may_see_it_and_only_them(client, site, role):
    as_role(client, site, role)
    for path, expected in _pages(site).items():
        response = client.get(path)
        response.get_data()  # a streamed export holds its request until read
        if role == "anonymous":
            if path == "/":
                assert response.status_code == 200 and "login_token" in response.text
            else:
                # Anonymous people are sent to the sign-in page, and back afterwards.
                assert response.status_code == 303, path
                assert response.headers["Location"].startswith("/login?next=")
            continue
        assert response.status_code == expected[role], (role, path, response.status_code)
        if response.status_code == 403:
            assert "Vous n’avez pas le droit" in response.text or "droit" in response.text


def test_pages_show_only_the_actions_a_role_may_take(client, site):
    p = site["project"].id
    as_role(client, site, "viewer")
    page = client.get(f"/projects/{p}").text
    assert "Ajouter un formulaire" not in page and "Utilisateurs mobiles" not in page
    listing = client.get(f"/projects/{p}/forms/menage/submissions").text
    assert 'name="instance_id"' not in listing and "Revoir les soumissions" not in listing
    assert (
        "Approuver"
        not in client.get(f"/projects/{p}/forms/menage/submissions/{site['instance_id']}").text
    )
    client.post("/logout", data={"csrf_token": csrf_of(client)})

    as_role(client, site, "formfill")
    page = client.get(f"/projects/{p}").text
    assert "Vous remplissez ces formulaires dans ODK Collect" in page
    assert "/submissions" not in page

    client.post("/logout", data={"csrf_token": csrf_of(client)})
    as_role(client, site, "manager")
    page = client.get(f"/projects/{p}").text
    assert "Ajouter un formulaire" in page and "Utilisateurs mobiles" in page
    assert "Comptes" not in page  # web users are for administrators
    assert 'name="instance_id"' in client.get(f"/projects/{p}/forms/menage/submissions").text


# ---- actions: roles, and the CSRF token on every one ------------------------------------------


def _post_routes(app, site) -> list[str]:
    """Return a URL for every console route that takes POST, with real values in it."""
    p = site["project"].id
    values = {
        "project_id": p,
        "xml_form_id": "menage",
        "instance_id": site["instance_id"],
        "actor_id": site["app_user"].actor_id,
        "member_id": site["people"]["viewer"].actor_id,
        "correction_id": 1,
        "conflict_id": 1,  # refused before it is looked up: no conflict needed
        "link_id": site["app_user"].actor_id,  # refused for its missing token before lookup
    }
    urls = []
    with app.test_request_context():
        from flask import url_for

        for rule in app.url_map.iter_rules():
            if not rule.endpoint.startswith("web.") or "POST" not in rule.methods:
                continue
            urls.append(url_for(rule.endpoint, **{k: values[k] for k in rule.arguments}))
    return urls


def test_every_console_action_refuses_a_request_without_its_csrf_token(app, client, site):
    urls = _post_routes(app, site)
    assert len(urls) >= 20
    as_role(client, site, "admin")
    with app.app_context():
        from server import db

        session = db.database().sessionmaker()
        events_before = session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
        session.close()
    for url in urls:
        if url == "/login":
            continue  # before any session: protected by its own double-submit token
        for token in (None, "forged-token"):
            data = {"csrf_token": token} if token else {}
            response = client.post(url, data=data)
            assert response.status_code == 403, (url, response.status_code)
            assert "Cette page a expiré" in response.text, url
            assert response.mimetype == "text/html"
    # Nothing happened: no new audit event, the tablet is not revoked, no project created.
    with app.app_context():
        from server import db

        session = db.database().sessionmaker()
        assert session.get(AppUser, site["app_user"].actor_id).revoked_at is None
        events = session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
        assert events == events_before

        session.close()


def test_console_actions_need_the_console_session_not_other_credentials(client, site):
    session = client.post(
        "/v1/sessions", json={"email": "admin@example.org", "password": PASSWORD}
    ).get_json()
    p = site["project"].id
    refused = client.post(
        f"/projects/{p}/app-users",
        data={"name": "Tablette"},
        headers={"Authorization": f"Bearer {session['token']}"},
    )
    assert refused.status_code == 403 and refused.mimetype == "text/html"
    shown = client.get(f"/projects/{p}", headers={"Authorization": f"Bearer {session['token']}"})
    assert shown.status_code == 200  # reading is harmless


def test_an_anonymous_action_is_refused_with_a_page(app, client, site):
    p = site["project"].id
    response = client.post(f"/projects/{p}/app-users", data={"name": "Tablette"})
    assert response.status_code == 401
    assert "Connexion" in response.text


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("viewer", False), ("formfill", False), ("outsider", False), ("manager", True)],
)
def test_reviewing_and_managing_tablets_need_a_manager(client, db_session, site, role, allowed):
    p = site["project"].id
    token = as_role(client, site, role)
    base = f"/projects/{p}/forms/menage/submissions"
    review = client.post(
        f"{base}/{site['instance_id']}/review", data={"csrf_token": token, "state": "approved"}
    )
    bulk = client.post(
        f"{base}/review",
        data={"csrf_token": token, "state": "rejected", "instance_id": site["instance_id"]},
    )
    tablet = client.post(f"/projects/{p}/app-users", data={"csrf_token": token, "name": "T2"})
    member = client.post(
        f"/projects/{p}/members",
        data={"csrf_token": token, "email": "viewer@example.org", "role": "manager"},
    )
    upload = client.post(
        f"/projects/{p}/forms",
        data={
            "csrf_token": token,
            "xlsform": (io.BytesIO(workbooks.xlsx(workbooks.simple())), "simple.xlsx"),
        },
    )
    statuses = [r.status_code for r in (review, bulk, tablet, member, upload)]
    if allowed:
        assert statuses == [303, 303, 303, 303, 303]
        assert db_session.scalar(sa.select(Submission.review_state)) == "rejected"
    else:
        assert statuses == [403] * 5
        assert db_session.scalar(sa.select(Submission.review_state)) is None
        assert db_session.scalar(sa.select(sa.func.count()).select_from(Form)) == 1


def test_only_administrators_create_projects_and_accounts(client, db_session, site):
    token = as_role(client, site, "manager")
    assert client.post("/projects", data={"csrf_token": token, "name": "X"}).status_code == 403
    created = client.post(
        "/users",
        data={"csrf_token": token, "email": "new@example.org", "password": "0123456789ab"},
    )
    assert created.status_code == 403
    client.post("/logout", data={"csrf_token": token})
    token = as_role(client, site, "admin")
    assert (
        client.post("/projects", data={"csrf_token": token, "name": "Tombouctou"}).status_code
        == 303
    )
    created = client.post(
        "/users",
        data={
            "csrf_token": token,
            "email": "New@Example.org",
            "password": "0123456789ab",
            "display_name": "Nouvelle",
        },
    )
    assert created.status_code == 303
    assert "new@example.org" in client.get("/users").text
    assert "Tombouctou" in client.get("/").text


# ---- signing in and out ----------------------------------------------------------------------


def test_sign_in_sets_a_strict_cookie_and_goes_back_where_asked(client, site):
    page = client.get("/login?next=/projects/1")
    assert page.status_code == 200
    response = sign_in(client, "admin@example.org")
    assert response.status_code == 303 and response.headers["Location"] == "/"
    cookie = next(
        c for c in response.headers.getlist("Set-Cookie") if c.startswith("merit_session=")
    )
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


@pytest.mark.parametrize("app_overrides", [{"SECURE_COOKIES": True}])
def test_the_session_cookie_is_secure_behind_tls(client, site, app_overrides):
    response = sign_in(client, "admin@example.org")
    cookie = next(
        c for c in response.headers.getlist("Set-Cookie") if c.startswith("merit_session=")
    )
    assert "; Secure" in cookie


def test_next_never_leads_to_another_site(client, site):
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)[1]
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        response = client.post(
            "/login",
            data={
                "email": "admin@example.org",
                "password": PASSWORD,
                "login_token": token,
                "next": target,
            },
        )
        assert response.headers["Location"] == "/", target
        client.post("/logout", data={"csrf_token": csrf_of(client)})
        token = re.search(r'name="login_token" value="([^"]+)"', client.get("/login").text)[1]


def test_sign_in_without_the_pages_token_is_refused(client, site):
    response = client.post(
        "/login", data={"email": "admin@example.org", "password": PASSWORD, "login_token": "x"}
    )
    assert response.status_code == 400
    assert "La page de connexion avait expiré" in alert(response)
    assert "merit_session=" not in " ".join(response.headers.getlist("Set-Cookie"))


def test_wrong_passwords_then_the_lockout_are_explained(client, site):
    response = sign_in(client, "admin@example.org", "wrong password!")
    assert response.status_code == 401
    assert alert(response) == "Adresse électronique ou mot de passe incorrect."
    for _ in range(3):
        sign_in(client, "admin@example.org", "wrong password!")
    locked = sign_in(client, "admin@example.org", "wrong password!")
    assert locked.status_code == 429
    assert "Trop de tentatives de connexion" in alert(locked)
    assert sign_in(client, "admin@example.org").status_code == 429  # even the right one


def test_sign_out_ends_the_session(client, db_session, site):
    token = as_role(client, site, "manager")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert db_session.scalar(sa.select(sa.func.count()).select_from(AuthSession)) == 0
    assert client.get("/users").status_code == 303  # to the sign-in page


def test_password_change(client, db_session, site):
    token = as_role(client, site, "viewer")
    wrong = client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "old_password": "not it at all",
            "new_password": "a new long password",
            "confirm_password": "a new long password",
        },
    )
    assert wrong.status_code == 400 and "actuel n’est pas le bon" in alert(wrong)
    differ = client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "old_password": PASSWORD,
            "new_password": "a new long password",
            "confirm_password": "another one",
        },
    )
    assert differ.status_code == 400 and "différents" in alert(differ)
    short = client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "old_password": PASSWORD,
            "new_password": "short",
            "confirm_password": "short",
        },
    )
    assert short.status_code == 400
    done = client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "old_password": PASSWORD,
            "new_password": "a new long password",
            "confirm_password": "a new long password",
        },
    )
    assert done.status_code == 303
    assert "Votre mot de passe a été changé" in client.get("/account/password").text
    client.post("/logout", data={"csrf_token": csrf_of(client)})
    assert sign_in(client, "viewer@example.org").status_code == 401
    assert sign_in(client, "viewer@example.org", "a new long password").status_code == 303


def test_language_switch(client, site):
    as_role(client, site, "manager")
    response = client.get("/lang/en?next=/projects/1")
    assert response.status_code == 303 and response.headers["Location"] == "/projects/1"
    page = client.get("/")
    assert '<html lang="en">' in page.text and "Sign out" in page.text
    assert client.get("/lang/xx").status_code == 404
    assert client.get("/lang/fr?next=https://evil.example").headers["Location"] == "/"


# ---- headers and problems --------------------------------------------------------------------


def test_every_console_response_carries_the_security_headers(client, site):
    as_role(client, site, "admin")
    for path in [*_pages(site), "/projects/999", "/projects/1/forms/nope"]:
        response = client.get(path)
        response.get_data()  # a streamed export holds its request until read
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (path, name)
        policy = response.headers["Content-Security-Policy"]
        if response.mimetype != "text/html":
            # A file (a photo, an export) gets the sandbox of served content (issue 16).
            assert policy == "default-src 'none'; sandbox", path
            continue
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy


@pytest.mark.parametrize(
    "app_overrides", [{"TILE_URL": "https://{s}.tile.example.org/{z}/{x}/{y}.png"}]
)
def test_the_tile_server_is_allowed_for_images_only_when_configured(client, site, app_overrides):
    as_role(client, site, "admin")
    policy = client.get("/").headers["Content-Security-Policy"]
    assert "img-src 'self' data: https://*.tile.example.org" in policy


def test_problems_render_as_pages_in_the_users_language(client, site):
    as_role(client, site, "admin")
    missing = client.get("/projects/999")
    assert missing.status_code == 404 and missing.mimetype == "text/html"
    assert "Introuvable" in missing.text
    client.get("/lang/en")
    missing = client.get("/projects/999")
    assert "Not found" in missing.text and "Could not find" in missing.text


def test_pages_are_never_kept_in_a_cache_but_assets_are(client, site):
    as_role(client, site, "manager")
    assert client.get("/").headers["Cache-Control"] == "no-store"
    page = client.get("/").text
    css = re.search(r'href="(/static/console/console\.css\?v=\w+)"', page)[1]
    asset = client.get(css)
    assert asset.status_code == 200
    assert "immutable" in asset.headers["Cache-Control"]


# ---- bad input -------------------------------------------------------------------------------


def _upload(client, token, project_id, data: bytes, name: str):  # type: ignore[no-untyped-def]
    return client.post(
        f"/projects/{project_id}/forms",
        data={"csrf_token": token, "xlsform": (io.BytesIO(data), name)},
    )


def test_a_broken_spreadsheet_shows_its_errors_by_sheet_row_and_column(client, db_session, site):
    token = as_role(client, site, "manager")
    p = site["project"].id
    response = _upload(client, token, p, workbooks.xlsx(workbooks.text("broken.md")), "broken.xlsx")
    assert response.status_code == 400
    row = re.search(
        r'<table class="located[^"]*">.*?<tbody>\s*<tr>(.*?)</tr>', response.text, re.S
    )[1]
    cells = [c.strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[:3] == ["survey", "3", "name"]
    # Said in French, the row not repeated inside; pyxform's English sentence kept as a detail.
    problem = html.unescape(cells[3])
    assert problem.startswith("Le nom « q1 » est utilisé deux fois") and "[row" not in problem
    assert "<details" in problem and "'q1' is invalid" in problem
    assert db_session.scalar(sa.select(sa.func.count()).select_from(Form)) == 1


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"%PDF-1.4 a report", "report.pdf", "Type de fichier non pris en charge"),
        (b"not really excel", "form.xlsx", "n’est pas un classeur Excel"),
        (b"", "empty.xlsx", "Choisissez le fichier XLSForm"),
    ],
)
def test_wrong_files_get_a_plain_message(client, site, data, name, message):
    token = as_role(client, site, "manager")
    response = _upload(client, token, site["project"].id, data, name)
    assert response.status_code == 400
    assert message in html.unescape(response.text).replace("'", "’")


@pytest.mark.parametrize("app_overrides", [{"MAX_UPLOAD_BYTES": 50_000}])
def test_an_oversized_upload_gets_a_page_not_a_500(client, site, app_overrides):
    token = as_role(client, site, "manager")
    response = _upload(client, token, site["project"].id, b"x" * 80_000, "big.xlsx")
    assert response.status_code == 413
    assert response.mimetype == "text/html" and "Trop volumineux" in response.text


def test_a_form_id_already_used_points_to_the_form(client, site):
    token = as_role(client, site, "manager")
    markdown = workbooks.simple(form_id="menage", version="9")
    response = _upload(client, token, site["project"].id, workbooks.xlsx(markdown), "m.xlsx")
    assert response.status_code == 409
    assert "existe déjà" in alert(response)
    assert f"/projects/{site['project'].id}/forms/menage" in response.text


@pytest.mark.parametrize(
    "query",
    [
        "from=07/05/2024",
        "to=yesterday",
        "state=maybe",
        "submitter=abc",
        "before=-3",
        "from=2024-05-08&to=2024-05-01",
    ],
)
def test_bad_filters_get_a_clear_message(client, site, query):
    as_role(client, site, "viewer")
    response = client.get(f"/projects/{site['project'].id}/forms/menage/submissions?{query}")
    assert response.status_code == 400
    assert "ne convient pas" in alert(response)


@pytest.mark.parametrize(
    "query", ["format=pdf", "format=csv&start=soon", "format=csv&separator=%22%22%22%22"]
)
def test_bad_export_options_get_a_page(client, site, query):
    as_role(client, site, "viewer")
    response = client.get(f"/projects/{site['project'].id}/forms/menage/export/download?{query}")
    assert response.status_code == 400 and response.mimetype == "text/html"


def test_bad_audit_filters_get_a_clear_message(client, site):
    as_role(client, site, "admin")
    assert client.get("/audit?from=tomorrow").status_code == 400
    assert client.get("/audit?action=drop.tables").status_code == 400
    assert client.get("/audit?project=x").status_code == 400


# ---- what the pages do -----------------------------------------------------------------------


def test_table_filters_search_and_pages_by_id(client, db_session, site):
    token = as_role(client, site, "manager")
    p = site["project"].id
    # 60 more records from another tablet, so that the table has two pages of 50.
    tablet, tablet_token = factories.app_user(db_session, p, "Tablette 2")
    accounts.assign(db_session, tablet.actor_id, "app-user", form_id=site["form"].id, by=None)
    db_session.commit()
    for number in range(60):
        xml = record(new_instance_id(), name=f"Personne {number:02d}", photo=None, audit=None)
        client.post(
            f"/v1/key/{tablet_token}/projects/{p}/submission",
            data=multipart(xml),
            headers=OPENROSA,
        )
    base = f"/projects/{p}/forms/menage/submissions"
    first = client.get(base).text
    assert "61 soumissions correspondent." in first
    assert first.count('name="instance_id"') == 50 and "Personne 59" in first
    older = re.search(r'href="([^"]*before=\d+[^"]*)"', first)[1].replace("&amp;", "&")
    second = client.get(older).text
    assert second.count('name="instance_id"') == 11 and "Awa Traoré" in second
    newer = re.search(r'href="([^"]*after=\d+[^"]*)"', second)[1].replace("&amp;", "&")
    assert "Personne 59" in client.get(newer).text
    found = client.get(base + "?q=personne 07").text
    assert "1 soumission correspond." in found and "Personne 07" in found
    mine = client.get(f"{base}?submitter={tablet.actor_id}").text
    assert "60 soumissions correspondent." in mine
    # Bulk review of the ticked records, with a comment.
    ids = re.findall(r'name="instance_id" value="([^"]+)"', first)[:3]
    done = client.post(
        f"{base}/review",
        data={
            "csrf_token": token,
            "state": "hasIssues",
            "instance_id": ids,
            "comment": "Âge à vérifier",
            "next": base + "?state=hasIssues",
        },
    )
    assert done.status_code == 303 and done.headers["Location"].endswith("?state=hasIssues")
    flagged = client.get(base + "?state=hasIssues").text
    assert "3 soumissions correspondent." in flagged
    assert "3 soumissions passées à « Avec problèmes »." in flagged


def test_a_record_page_shows_answers_photo_versions_and_comments(client, db_session, site):
    token = as_role(client, site, "manager")
    p = site["project"].id
    page = f"/projects/{p}/forms/menage/submissions/{site['instance_id']}"
    text = client.get(page).text
    assert re.search(r"<dt[^>]*>name .*?</dt>\s*<dd[^>]*>\s*Awa Traoré", text, re.S)
    assert re.search(r"<dt[^>]*>age .*?</dt>\s*<dd[^>]*>\s*34", text, re.S)
    assert f'src="{page}/attachments/1715090512345.jpg?version=' in text.replace("%3A", ":")
    photo = client.get(f"{page}/attachments/1715090512345.jpg")
    assert photo.status_code == 200 and photo.headers["Content-Type"] == "image/jpeg"
    assert photo.headers["Content-Disposition"].startswith("inline")
    assert client.get(f"{page}/attachments/other.jpg").status_code == 404
    commented = client.post(f"{page}/comments", data={"csrf_token": token, "body": "À revoir"})
    assert commented.status_code == 303
    reviewed = client.post(
        f"{page}/review", data={"csrf_token": token, "state": "rejected", "comment": "Doublon"}
    )
    assert reviewed.status_code == 303
    text = client.get(page).text
    assert "À revoir" in text and "Doublon" in text and "Rejetée" in text
    assert (
        client.post(f"{page}/review", data={"csrf_token": token, "state": "edited"}).status_code
        == 400
    )
    assert (
        client.post(f"{page}/comments", data={"csrf_token": token, "body": " "}).status_code == 400
    )


def test_publishing_needs_the_media_and_tablets_get_the_form(client, db_session, site):
    token = as_role(client, site, "manager")
    p = site["project"].id
    household = workbooks.xlsx(workbooks.text("household.md"))
    created = _upload(client, token, p, household, "household.xlsx")
    assert created.status_code == 303
    form_page = client.get(f"/projects/{p}/forms/household").text
    assert form_page.count("manquant</span>") == 3
    # Never published: a draft's badge, and no state selector promising tablets the form.
    assert "Brouillon, non publié" in form_page and 'id="unpublished-state"' in form_page
    assert 'name="state"' not in form_page and "Ouvert :" not in form_page
    assert "Brouillon, non publié" in client.get(f"/projects/{p}").text
    assert "Répondant" in form_page and "Respondent" in form_page
    refused = client.post(
        f"/projects/{p}/forms/household/draft/publish", data={"csrf_token": token}
    )
    assert refused.status_code == 409
    assert "besoins.png" in refused.text
    for name in ("besoins.png", "needs.png", "villages.csv"):
        attached = client.post(
            f"/projects/{p}/forms/household/draft/media",
            data={"csrf_token": token, "name": name, "file": (io.BytesIO(b"data"), name)},
        )
        assert attached.status_code == 303
    published = client.post(
        f"/projects/{p}/forms/household/draft/publish", data={"csrf_token": token}
    )
    assert published.status_code == 303
    page = client.get(f"/projects/{p}/forms/household").text
    assert "La version 2024050701 est publiée." in page
    assert "Brouillon, non publié" not in page and 'name="state"' in page
    # Pages and crumbs name the form by its title; its formID is shown once, small.
    records = client.get(f"/projects/{p}/forms/household/submissions").text
    assert "<title>Soumissions · Enquête ménage" in records
    assert re.search(r'class="crumbs">.*?>Enquête ménage</a>', records, re.S)
    version_id = re.search(r"/versions/(\d+)/xform", page)[1]
    xform = client.get(f"/projects/{p}/forms/household/versions/{version_id}/xform")
    assert xform.status_code == 200 and b'id="household"' in xform.data
    source = client.get(f"/projects/{p}/forms/household/versions/{version_id}/source")
    assert source.status_code == 200 and source.data == household
    closed = client.post(
        f"/projects/{p}/forms/household/state", data={"csrf_token": token, "state": "closing"}
    )
    assert closed.status_code == 303
    assert (
        db_session.scalar(sa.select(Form.state).where(Form.xml_form_id == "household")) == "closing"
    )


def test_an_app_users_qr_code_holds_its_settings_and_revoking_ends_it(client, db_session, site):
    from server.openrosa import settings as collect

    token = as_role(client, site, "manager")
    p = site["project"].id
    created = client.post(f"/projects/{p}/app-users", data={"csrf_token": token, "name": "Tab 9"})
    page_url = created.headers["Location"]
    page = client.get(page_url).text
    payload = re.search(r'data-payload="([^"]+)"', page)[1]
    settings = collect.decode(payload)
    assert settings["general"]["server_url"].startswith("http://localhost/v1/key/")
    assert settings["admin"] == {"change_server": False}
    chosen = client.post(
        page_url + "/qr",
        data={
            "csrf_token": token,
            "autosend": "off",
            "admin_password": "verrou",
            "form_update_mode": "manual",
        },
    )
    settings = collect.decode(re.search(r'data-payload="([^"]+)"', chosen.text)[1])
    assert settings["general"]["autosend"] == "off"
    assert settings["general"]["form_update_mode"] == "manual"
    assert settings["admin"]["admin_pw"] == "verrou"
    bad = client.post(page_url + "/qr", data={"csrf_token": token, "autosend": "always"})
    assert bad.status_code == 400
    # Forms: none, then back to the one form.
    actor_id = int(page_url.rsplit("/", 1)[1])
    client.post(page_url + "/forms", data={"csrf_token": token})
    assigned = (
        sa.select(sa.func.count()).select_from(Assignment).where(Assignment.actor_id == actor_id)
    )
    assert db_session.scalar(assigned) == 0
    client.post(page_url + "/forms", data={"csrf_token": token, "form_id": site["form"].id})
    db_session.rollback()  # read what the request committed
    assert db_session.scalar(assigned) == 1
    # Revoked: the token stops working at once and the page has no QR code any more.
    server_path = settings["general"]["server_url"].removeprefix("http://localhost")
    assert client.get(server_path + "/formList").status_code == 200
    assert client.post(page_url + "/revoke", data={"csrf_token": token}).status_code == 303
    assert client.get(server_path + "/formList").status_code == 403
    assert "data-payload" not in client.get(page_url).text


def test_members_get_and_lose_roles(client, db_session, site):
    token = as_role(client, site, "manager")
    p = site["project"].id
    unknown = client.post(
        f"/projects/{p}/members",
        data={"csrf_token": token, "email": "nobody@example.org", "role": "viewer"},
    )
    assert unknown.status_code == 404 and "Aucun compte" in unknown.text
    bad_role = client.post(
        f"/projects/{p}/members",
        data={"csrf_token": token, "email": "outsider@example.org", "role": "admin"},
    )
    assert bad_role.status_code == 400
    added = client.post(
        f"/projects/{p}/members",
        data={"csrf_token": token, "email": "outsider@example.org", "role": "viewer"},
    )
    assert added.status_code == 303
    assert "outsider@example.org" in client.get(f"/projects/{p}/members").text
    outsider = site["people"]["outsider"].actor_id
    removed = client.post(
        f"/projects/{p}/members/{outsider}/remove", data={"csrf_token": token, "role": "viewer"}
    )
    assert removed.status_code == 303
    assert "outsider@example.org" not in client.get(f"/projects/{p}/members").text


def test_export_downloads_at_once_and_the_cleaning_log_gives_a_verdict(client, site):
    token = as_role(client, site, "viewer")
    p = site["project"].id
    download = client.get(
        f"/projects/{p}/forms/menage/export/download?format=csv&headers=names&groupPaths=1"
    )
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].startswith("attachment")
    body = download.get_data(as_text=True)
    assert site["instance_id"] in body and "Awa Traoré" in body
    key = site["instance_id"]
    log = f"KEY,column,old value,new value,reason\n{key},age,34,43,typo\n{key},nope,1,2,x\n"
    refused = client.post(
        f"/projects/{p}/forms/menage/corrections",
        data={"csrf_token": token, "file": (io.BytesIO(log.encode()), "log.csv")},
    )
    assert refused.status_code == 400
    assert (
        refused.text.count('class="refused"') == 1 and refused.text.count('class="accepted"') == 1
    )
    partial = client.post(
        f"/projects/{p}/forms/menage/corrections",
        data={"csrf_token": token, "partial": "1", "file": (io.BytesIO(log.encode()), "log.csv")},
    )
    assert partial.status_code == 200 and "1 corrections acceptées" in partial.text
    corrected = client.get(f"/projects/{p}/forms/menage/export/download?format=csv").get_data(
        as_text=True
    )
    assert ",43," in corrected
    # From the page's form, an unticked box means "no": here the raw values.
    raw = client.get(
        f"/projects/{p}/forms/menage/export/download?format=csv&options=form"
    ).get_data(as_text=True)
    assert ",34," in raw
    unreadable = client.post(
        f"/projects/{p}/forms/menage/corrections",
        data={"csrf_token": token, "file": (io.BytesIO(b"a;b\n1;2\n"), "log.csv")},
    )
    assert unreadable.status_code == 400


def test_overview_draws_its_charts_on_the_server(client, site):
    as_role(client, site, "viewer")
    html = client.get(f"/projects/{site['project'].id}/forms/menage/overview").text
    assert '<rect class="fill"' in html  # records per day
    assert "Tablette 1" in html  # per enumerator
    assert "<script" not in html.split("</head>", 1)[1]  # no inline script anywhere


def test_audit_log_filters_and_scope(client, site):
    token = as_role(client, site, "manager")
    p = site["project"].id
    client.post(
        f"/projects/{p}/forms/menage/submissions/{site['instance_id']}/review",
        data={"csrf_token": token, "state": "approved"},
    )
    page = html.unescape(client.get("/audit?action=submission.update").text)
    # Said in words, the code kept as a title; the details as lines, not JSON.
    assert re.search(r'<td [^>]*title="submission\.update"[^>]*>État de revue changé</td>', page)
    assert "Soumission reçue" not in page and '"reviewState"' not in page
    assert re.search(r"État de revue</span> Approuvée", page)
    assert re.search(rf"Fiche</span> {re.escape(site['instance_id'])}", page)
    assert "Aucun événement ne correspond" in client.get("/audit?action=form").text
    client.post("/logout", data={"csrf_token": csrf_of(client)})
    as_role(client, site, "outsider")
    assert 'title="submission.update"' not in client.get("/audit").text


def test_a_form_without_a_version_is_published_in_words(client, site):
    token = as_role(client, site, "manager")
    p = site["project"].id
    unversioned = workbooks.text("simple.md").replace("| version |", "| |").replace("| 1 ", "| ")
    assert _upload(client, token, p, workbooks.xlsx(unversioned), "plain.xlsx").status_code == 303
    published = client.post(
        f"/projects/{p}/forms/simple/draft/publish",
        data={"csrf_token": token},
        follow_redirects=True,
    )
    assert "Le formulaire est publié." in published.text and "La version —" not in published.text


def test_a_coordinator_picks_answer_columns_and_personal_ones_stay_hidden(client, db_session, site):
    from server.forms.models import FormVersion

    # The name is personal: the coordinator (with the right) reads it, an analyst its pseudonym.
    version = db_session.scalars(sa.select(FormVersion)).one()
    fields = [{**f, "pii": f["path"] == "/data/name"} for f in version.schema["fields"]]
    version.schema = {**version.schema, "fields": fields}
    db_session.commit()
    token = as_role(client, site, "manager")
    p = site["project"].id
    base = f"/projects/{p}/forms/menage/submissions"
    page = client.get(base).text
    assert 'id="columns"' in page and 'value="/data/photo"' not in page  # files are not offered
    assert 'value="/data/members/member_name"' not in page  # nor answers inside a repeat
    chosen = client.post(
        f"{base}/columns",
        data={"csrf_token": token, "column": ["/data/name", "/data/age"]},
    )
    assert chosen.status_code == 303
    shown = html.unescape(client.get(base).text)
    assert re.search(r"<th>name</th>\s*<th>age</th>", shown)
    assert re.search(r'<td data-label="name">Awa Traoré</td>\s*<td data-label="age">34</td>', shown)
    refused = client.post(f"{base}/columns", data={"csrf_token": token, "column": "/data/nope"})
    assert refused.status_code == 400 and "/data/nope" in html.unescape(refused.text)
    client.post("/logout", data={"csrf_token": csrf_of(client)})
    as_role(client, site, "viewer")
    analyst = html.unescape(client.get(base).text)
    assert "Awa Traoré" not in analyst and re.search(r'data-label="name">pid_\w+</td>', analyst)
    assert 'id="columns"' not in analyst  # only those who may change the form choose
    assert client.post(f"{base}/columns", data={"csrf_token": csrf_of(client)}).status_code == 403
