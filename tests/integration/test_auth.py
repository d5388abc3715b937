"""Authentication: sessions, Basic over HTTPS only, Digest as Collect speaks it, app-user
tokens in the path (403, never 401), lockout, and tokens kept out of the logs."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time

import pytest
from flask import g

from server import db
from server.auth import access, app_users, digest
from server.auth.prefix import url_prefix
from tests.support import factories
from tests.support.factories import PASSWORD


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def login(client, email="coord@example.org", password=PASSWORD):
    return client.post("/v1/sessions", json={"email": email, "password": password})


def test_session_login_gives_a_bearer_token_that_identifies_the_user(client, db_session):
    factories.user(db_session)
    response = login(client)
    assert response.status_code == 200
    body = response.json
    assert set(body) == {"createdAt", "expiresAt", "token", "csrf"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["expiresAt"])
    me = client.get("/v1/users/current", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200
    assert me.json["email"] == "coord@example.org"
    assert set(me.json) == {
        "id",
        "type",
        "displayName",
        "createdAt",
        "updatedAt",
        "deletedAt",
        "email",
    }


def test_wrong_password_and_unknown_email_get_the_same_401(client, db_session):
    factories.user(db_session)
    wrong = login(client, password="not the password")
    unknown = login(client, email="nobody@example.org")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json["code"] == unknown.json["code"] == 401.2
    assert wrong.json["message"] == unknown.json["message"]


def test_account_locks_after_repeated_failures_even_with_the_right_password(client, db_session):
    factories.user(db_session)
    for _ in range(5):
        assert login(client, password="guess").status_code == 401
    locked = login(client)
    assert locked.status_code == 429
    assert locked.json["code"] == 429.1


def test_success_clears_the_failure_count(client, db_session):
    factories.user(db_session)
    for _ in range(4):
        login(client, password="guess")
    assert login(client).status_code == 200
    for _ in range(4):
        login(client, password="guess")
    assert login(client).status_code == 200


def test_signing_out_ends_the_token(client, db_session):
    factories.user(db_session)
    token = login(client).json["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.delete(f"/v1/sessions/{token}", headers=headers).json == {"success": True}
    assert client.get("/v1/users/current", headers=headers).status_code == 401


def test_expired_bearer_token_is_refused(client, db_session, app):
    factories.user(db_session)
    token = login(client).json["token"]
    from server.auth.models import AuthSession
    from server.db import utcnow

    row = db_session.query(AuthSession).one()
    row.expires_at = utcnow()
    db_session.commit()
    response = client.get("/v1/users/current", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_expired_sessions_are_purged_when_someone_signs_in(client, db_session):
    import datetime as dt

    import sqlalchemy as sa

    from server.auth.models import AuthSession
    from server.db import utcnow

    factories.user(db_session)
    tokens = [login(client).json["token"] for _ in range(3)]
    rows = db_session.scalars(sa.select(AuthSession).order_by(AuthSession.id)).all()
    for row in rows[:2]:
        row.expires_at = utcnow() - dt.timedelta(hours=1)
    db_session.commit()
    kept = rows[2].id
    assert login(client).status_code == 200
    db_session.expire_all()
    left = db_session.scalars(sa.select(AuthSession.id).order_by(AuthSession.id)).all()
    assert len(left) == 2 and left[0] == kept
    headers = {"Authorization": f"Bearer {tokens[2]}"}
    assert client.get("/v1/users/current", headers=headers).status_code == 200


def test_anonymous_request_to_a_protected_resource_is_401_4(client):
    response = client.get("/v1/users/current")
    assert response.status_code == 401
    assert response.json["code"] == 401.4


def basic(email, password):
    return "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()


def test_basic_auth_is_refused_over_plain_http(client, db_session):
    factories.user(db_session)
    response = client.get(
        "/v1/users/current", headers={"Authorization": basic("coord@example.org", PASSWORD)}
    )
    assert response.status_code == 401
    assert response.json["code"] == 401.3


def test_basic_auth_works_over_https(client, db_session):
    factories.user(db_session)
    response = client.get(
        "/v1/users/current",
        base_url="https://collect.example.org",
        headers={"Authorization": basic("coord@example.org", PASSWORD)},
    )
    assert response.status_code == 200
    assert response.json["email"] == "coord@example.org"


def digest_header(
    nonce,
    *,
    uri,
    method="GET",
    email="coord@example.org",
    password=PASSWORD,
    nc="00000001",
    cnonce="0a4f113b",
):
    """Compute the Authorization header as okhttp-digest does (RFC 2617, qop=auth)."""
    ha1 = md5(f"{email}:merit-collect:{password}")
    ha2 = md5(f"{method}:{uri}")
    response = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="{email}", realm="merit-collect", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", qop=auth, nc={nc}, cnonce="{cnonce}", algorithm=MD5, '
        f'opaque="{digest.OPAQUE}"'
    )


def test_digest_with_a_fresh_nonce_authenticates(client, db_session, app):
    factories.user(db_session)
    nonce = digest.new_nonce(app.config["SECRET_KEY"])
    uri = "/v1/users/current?deviceID=collect%3AAbC123"
    response = client.get(uri, headers={"Authorization": digest_header(nonce, uri=uri)})
    assert response.status_code == 200
    assert response.json["email"] == "coord@example.org"


def test_digest_with_a_wrong_password_is_challenged_again(client, db_session, app):
    factories.user(db_session)
    nonce = digest.new_nonce(app.config["SECRET_KEY"])
    uri = "/v1/users/current"
    response = client.get(
        uri, headers={"Authorization": digest_header(nonce, uri=uri, password="wrong password")}
    )
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Digest ") and 'qop="auth"' in challenge
    assert "stale" not in challenge


def test_digest_with_an_expired_nonce_gets_stale_true(client, db_session, app):
    factories.user(db_session)
    old = digest.new_nonce(app.config["SECRET_KEY"], now=time.time() - digest.NONCE_LIFETIME - 5)
    uri = "/v1/users/current"
    response = client.get(uri, headers={"Authorization": digest_header(old, uri=uri)})
    assert response.status_code == 401
    assert "stale=true" in response.headers["WWW-Authenticate"]


def test_digest_nonce_forged_without_the_secret_is_refused(client, db_session):
    factories.user(db_session)
    forged = digest.new_nonce("another server's secret")
    uri = "/v1/users/current"
    response = client.get(uri, headers={"Authorization": digest_header(forged, uri=uri)})
    assert response.status_code == 401
    assert "stale" not in response.headers["WWW-Authenticate"]


def test_digest_for_another_uri_is_refused(client, db_session, app):
    factories.user(db_session)
    nonce = digest.new_nonce(app.config["SECRET_KEY"])
    response = client.get(
        "/v1/users/current",
        headers={"Authorization": digest_header(nonce, uri="/v1/projects/1/formList")},
    )
    assert response.status_code == 401


def test_a_digest_header_works_once_and_the_next_count_works(client, db_session, app):
    factories.user(db_session)
    nonce = digest.new_nonce(app.config["SECRET_KEY"])
    uri = "/v1/users/current"
    first = {"Authorization": digest_header(nonce, uri=uri, nc="00000001")}
    assert client.get(uri, headers=first).status_code == 200
    replayed = client.get(uri, headers=first)
    assert replayed.status_code == 401
    challenge = replayed.headers["WWW-Authenticate"]
    assert "stale=true" in challenge and nonce not in challenge
    third = {"Authorization": digest_header(nonce, uri=uri, nc="00000003")}
    assert client.get(uri, headers=third).status_code == 200
    second = {"Authorization": digest_header(nonce, uri=uri, nc="00000002")}
    assert client.get(uri, headers=second).status_code == 401  # below one already seen


def test_a_digest_header_without_qop_works_once(client, db_session, app):
    factories.user(db_session)
    nonce = digest.new_nonce(app.config["SECRET_KEY"])
    uri = "/v1/users/current"
    ha1 = md5(f"coord@example.org:merit-collect:{PASSWORD}")
    response = md5(f"{ha1}:{nonce}:{md5(f'GET:{uri}')}")
    header = (
        f'Digest username="coord@example.org", realm="merit-collect", nonce="{nonce}", '
        f'uri="{uri}", response="{response}"'
    )
    assert client.get(uri, headers={"Authorization": header}).status_code == 200
    assert client.get(uri, headers={"Authorization": header}).status_code == 401


def test_a_digest_header_with_a_malformed_count_is_challenged(client, db_session, app):
    factories.user(db_session)
    nonce = digest.new_nonce(app.config["SECRET_KEY"])
    uri = "/v1/users/current"
    for nc in ("zz", "000000001", "-1"):
        response = client.get(uri, headers={"Authorization": digest_header(nonce, uri=uri, nc=nc)})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Digest ")


def test_a_nonce_from_before_nonces_were_counted_is_stale(client, db_session, app):
    """Tablets updated across the upgrade hold a nonce without random part: they retry."""
    from server.auth.tokens import sign

    factories.user(db_session)
    stamp = format(int(time.time()), "x")
    legacy = f"{stamp}.{sign(app.config['SECRET_KEY'], stamp, 'digest-nonce')[:32]}"
    uri = "/v1/users/current"
    response = client.get(uri, headers={"Authorization": digest_header(legacy, uri=uri)})
    assert response.status_code == 401
    assert "stale=true" in response.headers["WWW-Authenticate"]


def test_two_nonces_issued_in_the_same_second_differ(app):
    now = time.time()
    secret = app.config["SECRET_KEY"]
    assert digest.new_nonce(secret, now) != digest.new_nonce(secret, now)


def test_counts_of_expired_nonces_are_purged_when_a_nonce_comes_into_use(client, db_session, app):
    import datetime as dt

    import sqlalchemy as sa

    from server.auth.models import DigestNonce
    from server.db import utcnow

    factories.user(db_session)
    secret, uri = app.config["SECRET_KEY"], "/v1/users/current"
    recent = digest.new_nonce(secret, now=time.time() - 60)
    digest.accept_count(db_session, recent, 1)
    gone = utcnow() - dt.timedelta(seconds=digest.CLOCK_SKEW + 5)
    for number in range(3):
        db_session.add(DigestNonce(nonce=f"old-{number}", last_nc=7, expires_at=gone))
    db_session.commit()
    assert db_session.scalar(sa.select(sa.func.count()).select_from(DigestNonce)) == 4
    nonce = digest.new_nonce(secret)
    assert (
        client.get(uri, headers={"Authorization": digest_header(nonce, uri=uri)}).status_code == 200
    )
    db_session.rollback()  # a new snapshot (SQLite keeps the old one until then)
    assert set(db_session.scalars(sa.select(DigestNonce.nonce))) == {recent, nonce}


def test_app_user_token_in_the_path_authenticates_and_is_stripped(client, db_session, app):
    project = factories.project(db_session)
    app_user, token = factories.app_user(db_session, project.id)
    response = client.get(f"/v1/key/{token}/users/current")
    assert response.status_code == 200
    assert response.json["type"] == "field_key"
    assert response.json["id"] == app_user.actor_id


def test_bad_token_is_403_never_401(client, db_session):
    response = client.get("/v1/key/" + "x" * 64 + "/users/current")
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response.headers


def test_revoked_token_is_403(client, db_session):
    project = factories.project(db_session)
    app_user, token = factories.app_user(db_session, project.id)
    app_users.revoke(db_session, app_user, by=None)
    db_session.commit()
    assert client.get(f"/v1/key/{token}/users/current").status_code == 403


def test_sealed_token_can_be_shown_again_until_revoked(db_session, app):
    project = factories.project(db_session)
    app_user, token = factories.app_user(db_session, project.id)
    secret = app.config["SECRET_KEY"]
    assert app_users.token_of(app_user, secret_key=secret) == token
    assert app_users.token_of(app_user, secret_key="rotated secret") is None
    app_users.revoke(db_session, app_user, by=None)
    assert app_users.token_of(app_user, secret_key=secret) is None


def test_tokens_never_reach_the_log(client, db_session, caplog):
    project = factories.project(db_session)
    _, token = factories.app_user(db_session, project.id)
    factories.user(db_session)
    caplog.set_level(logging.INFO, logger="merit.access")
    client.get(f"/v1/key/{token}/users/current")
    bearer = login(client).json["token"]
    client.get("/v1/users/current", headers={"Authorization": f"Bearer {bearer}"})
    client.get(f"/v1/sessions/{bearer}")
    logged = "\n".join(repr(r.__dict__) for r in caplog.records)
    assert "users/current" in logged
    assert token not in logged
    assert bearer not in logged
    assert PASSWORD not in logged


def test_url_prefix_is_kept_for_building_urls(app, db_session):
    project = factories.project(db_session)
    _, token = factories.app_user(db_session, project.id)
    seen = {}

    @app.get("/v1/probe-prefix")
    def probe():
        seen["prefix"] = url_prefix()
        return "ok"

    app.test_client().get(f"/v1/key/{token}/probe-prefix")
    assert seen["prefix"] == f"/v1/key/{token}"


@pytest.mark.parametrize(
    ("role", "scope", "verb", "allowed"),
    [
        ("admin", None, "project.create", True),
        ("manager", "own", "form.create", True),
        ("manager", "other", "form.create", False),
        ("manager", "own", "project.create", False),
        ("viewer", "own", "submission.read", True),
        ("viewer", "own", "submission.update", False),
        ("formfill", "own", "submission.create", True),
        ("formfill", "own", "submission.list", False),
    ],
)
def test_verbs_follow_role_and_scope(app, db_session, role, scope, verb, allowed):
    own = factories.project(db_session, "own")
    other = factories.project(db_session, "other")
    user = factories.user(db_session, role=role, project_id=None if scope is None else own.id)
    target = own if scope in (None, "own") else other
    with app.test_request_context("/v1/x"):
        g.actor = access.Principal(user.actor_id, "user", user.email)
        assert access.can(verb, project_id=target.id) is allowed


def test_app_user_is_confined_to_its_project_and_assigned_forms(app, db_session):
    from server.auth import services as accounts
    from server.forms.models import Form

    own = factories.project(db_session, "own")
    other = factories.project(db_session, "other")
    app_user, _ = factories.app_user(db_session, own.id)
    form = Form(project_id=own.id, xml_form_id="menage")
    db_session.add(form)
    db_session.flush()
    accounts.assign(db_session, app_user.actor_id, "app-user", form_id=form.id, by=None)
    db_session.commit()
    with app.test_request_context("/v1/x"):
        g.actor = access.Principal(app_user.actor_id, "field_key", "T", app_user.project_id)
        assert access.can("submission.create", project_id=own.id, form_id=form.id)
        assert not access.can("submission.create", project_id=own.id, form_id=form.id + 1)
        assert not access.can("submission.create", project_id=other.id, form_id=form.id)
        assert not access.can("submission.list", project_id=own.id, form_id=form.id)
        assert access.visible_project_ids() == {own.id}
    assert db.database  # the request above used the app's own database
