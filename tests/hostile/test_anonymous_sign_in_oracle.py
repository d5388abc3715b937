"""An anonymous client tells which email addresses have an account by timing the sign-in.

Checking a password costs one argon2 computation (about half a second); an unknown email cost
none, so it answered fifty times sooner: whoever tried a list of addresses learnt which ones
were accounts here (a list of the programme's coordinators). Every sign-in now costs one argon2
computation, whether the account exists, is deleted, has no password, or is locked.

No stopwatch here (timings are flaky on shared machines): the test counts the argon2
computations, through a spy on the one hasher every password check uses.
"""

from __future__ import annotations

import base64
import re

import pytest

from server.auth import passwords
from server.auth import services as accounts
from server.auth.models import Actor
from server.db import utcnow
from tests.support import factories
from tests.support.factories import PASSWORD

KNOWN = "coord@example.org"


class CountingHasher:
    """The real argon2 hasher, counting the computations it makes (hash and verify)."""

    def __init__(self, real) -> None:
        self.real = real
        self.computations = 0

    def hash(self, password, **kwargs):
        self.computations += 1
        return self.real.hash(password, **kwargs)

    def verify(self, password_hash, password):
        self.computations += 1
        return self.real.verify(password_hash, password)

    def check_needs_rehash(self, password_hash):
        return self.real.check_needs_rehash(password_hash)


@pytest.fixture
def hasher(monkeypatch):
    spy = CountingHasher(passwords._hasher)
    monkeypatch.setattr(passwords, "_hasher", spy)
    return spy


def by_api(client, email, password):
    return client.post("/v1/sessions", json={"email": email, "password": password})


def by_console(client, email, password):
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)[1]
    return client.post("/login", data={"email": email, "password": password, "login_token": token})


def by_basic(client, email, password):
    credentials = base64.b64encode(f"{email}:{password}".encode()).decode()
    return client.get(
        "/v1/users/current",
        base_url="https://collect.example.org",
        headers={"Authorization": f"Basic {credentials}"},
    )


SIGN_INS = {"api": by_api, "console": by_console, "basic": by_basic}


def computations(hasher, sign_in, client, email, password) -> tuple[int, int]:
    before = hasher.computations
    status = sign_in(client, email, password).status_code
    return hasher.computations - before, status


@pytest.mark.parametrize("path", SIGN_INS)
def test_an_unknown_email_costs_the_same_password_check_as_a_known_one(
    client, db_session, hasher, path
):
    factories.user(db_session, KNOWN)
    sign_in = SIGN_INS[path]
    known = computations(hasher, sign_in, client, KNOWN, "not the password")
    unknown = computations(hasher, sign_in, client, "nobody@example.org", "not the password")
    right = computations(hasher, sign_in, client, KNOWN, PASSWORD)
    assert known[1] == unknown[1] != right[1]
    assert known[0] == unknown[0] == right[0] == 1


@pytest.mark.parametrize("path", SIGN_INS)
def test_deleted_passwordless_and_locked_accounts_cost_one_check_too(
    client, db_session, hasher, path
):
    deleted = factories.user(db_session, "deleted@example.org")
    db_session.get(Actor, deleted.actor_id).deleted_at = utcnow()
    accounts.create_user(db_session, "no-password@example.org", None, by=None)
    factories.user(db_session, "locked@example.org")
    db_session.commit()
    sign_in = SIGN_INS[path]
    for _ in range(5):
        sign_in(client, "locked@example.org", "guess")
    for email in ("deleted@example.org", "no-password@example.org", "locked@example.org"):
        spent, status = computations(hasher, sign_in, client, email, PASSWORD)
        assert spent == 1, email
        assert status in (401, 429), email
