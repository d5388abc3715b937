"""Someone guesses an account's password by trying one after another.

Sign-in counts failures per account and locks it for a while (:mod:`server.auth.throttle`). The
password change asks for the current password too: whoever holds a session left open on a
shared computer (or a stolen bearer token) could try current passwords there without limit,
then change the password and keep the account. A wrong current password now counts as a failed
sign-in of that account, with the same lock and the same message.
"""

from __future__ import annotations

import re

import pytest

from tests.support import factories
from tests.support.factories import PASSWORD

EMAIL = "coord@example.org"
NEW = "a brand new long password"


def bearer(client) -> dict[str, str]:
    answer = client.post("/v1/sessions", json={"email": EMAIL, "password": PASSWORD})
    assert answer.status_code == 200, answer.json
    return {"Authorization": f"Bearer {answer.json['token']}"}


def sign_in_to_console(client, password: str = PASSWORD):
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)[1]
    return client.post("/login", data={"email": EMAIL, "password": password, "login_token": token})


def alert(response) -> str:
    found = re.search(r'role="alert">(.*?)</', response.text, re.S)
    assert found, response.text[:2000]
    return found[1].strip()


@pytest.fixture
def limit(app) -> int:
    return app.config["LOGIN_MAX_FAILURES"]


def test_guessing_the_current_password_through_the_api_locks_the_account(client, db_session, limit):
    user = factories.user(db_session, EMAIL)
    headers = bearer(client)
    url = f"/v1/users/{user.actor_id}/password"
    for _ in range(limit):  # as POST /v1/sessions: the limit-th failure is a 401, then 429
        wrong = client.put(url, json={"old": "a guess", "new": NEW}, headers=headers)
        assert wrong.status_code == 401
    locked = client.put(url, json={"old": "a guess", "new": NEW}, headers=headers)
    assert locked.status_code == 429 and locked.json["code"] == 429.1
    # Locked means locked: the right password changes nothing now, and signing in waits too.
    right = client.put(url, json={"old": PASSWORD, "new": NEW}, headers=headers)
    assert right.status_code == 429
    again = client.post("/v1/sessions", json={"email": EMAIL, "password": PASSWORD})
    assert again.status_code == 429 and again.json["message"] == locked.json["message"]


def test_guessing_the_current_password_in_the_console_locks_the_account(client, db_session, limit):
    factories.user(db_session, EMAIL)
    assert sign_in_to_console(client).status_code == 303
    page = client.get("/account/password")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]

    def change(old: str):
        return client.post(
            "/account/password",
            data={
                "csrf_token": csrf,
                "old_password": old,
                "new_password": NEW,
                "confirm_password": NEW,
            },
        )

    for _ in range(limit - 1):
        wrong = change("a guess")
        assert wrong.status_code == 400
    locked = change("a guess")
    assert locked.status_code == 429
    message = alert(locked)
    assert "Trop de tentatives de connexion" in message
    assert change(PASSWORD).status_code == 429
    client.post("/logout", data={"csrf_token": csrf})
    refused = sign_in_to_console(client)
    assert refused.status_code == 429 and alert(refused) == message


def test_a_right_current_password_clears_earlier_failures(client, db_session, limit):
    user = factories.user(db_session, EMAIL)
    headers = bearer(client)
    url = f"/v1/users/{user.actor_id}/password"
    for _ in range(limit - 1):
        client.put(url, json={"old": "a guess", "new": NEW}, headers=headers)
    assert client.put(url, json={"old": PASSWORD, "new": NEW}, headers=headers).status_code == 200
    for _ in range(limit - 1):
        wrong = client.post("/v1/sessions", json={"email": EMAIL, "password": "x"})
        assert wrong.status_code == 401
    assert client.post("/v1/sessions", json={"email": EMAIL, "password": NEW}).status_code == 200
