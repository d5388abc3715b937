"""HTTP Digest authentication (RFC 7616, MD5) as ODK Collect speaks it (openrosa.md §5).

Collect answers a challenge, caches the nonce and then sends credentials preemptively with an
increasing ``nc``. A nonce is the time it was issued and a random part, signed with the
server's secret, so any server process recognises any other's. When a nonce expires we
re-challenge with ``stale=true``: Collect then retries on its own (re-sending the POST body)
instead of treating it as a wrong password. The stored secret is HA1 = MD5(email:realm:password),
never the password.

A header is accepted once (issue 16: a captured header was accepted again later, over plain
HTTP anyone on the network could replay a submission). :func:`accept_count` keeps each nonce's
highest ``nc`` in the database, shared by every worker and server process, and refuses a count
that is not above it; the refusal is ``stale=true`` too, so that a request of Collect's that was
merely overtaken by the next one is retried with a fresh nonce, not taken for a wrong password.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.auth.models import DigestNonce
from server.auth.passwords import DIGEST_REALM
from server.auth.tokens import sign
from server.db import delete_batch, insert_or_ignore, utcnow

NONCE_LIFETIME = 30 * 60  # seconds; then stale=true makes Collect fetch a new one
CLOCK_SKEW = 60  # seconds: a nonce from a server process whose clock is slightly ahead
OPAQUE = "6d657269742d636f6c6c656374"  # constant: Collect echoes it back
# Rows of expired nonces deleted each time a nonce comes into use (more than come into use).
PURGE_BATCH = 100

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_NONCE_COUNT = re.compile(r"[0-9a-fA-F]{1,8}")  # RFC 7616: 8 hexadecimal digits


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def new_nonce(secret_key: str, now: float | None = None) -> str:
    """Return a nonce: the time it was issued and a random part, signed."""
    stamp = format(int(now if now is not None else time.time()), "x")
    issued = f"{stamp}-{secrets.token_hex(8)}"
    return f"{issued}.{sign(secret_key, issued, 'digest-nonce')[:32]}"


def _issued_at(nonce: str) -> int:
    """Return when a nonce (already checked by :func:`nonce_state`) was issued, in seconds."""
    return int(nonce.partition("-")[0], 16)


def nonce_state(secret_key: str, nonce: str, now: float | None = None) -> str:
    """Return "valid", "stale" (genuine but expired) or "invalid"."""
    issued, _, signature = nonce.partition(".")
    expected = sign(secret_key, issued, "digest-nonce")[:32]
    if not hmac.compare_digest(signature, expected):
        return "invalid"
    stamp, _, unique = issued.partition("-")
    try:
        age = (now if now is not None else time.time()) - int(stamp, 16)
    except ValueError:
        return "invalid"
    if not unique:
        # Issued before nonces had a random part: shared by every client challenged in the
        # same second, so its counts cannot be told apart. Genuine, hence stale: Collect
        # fetches a fresh one instead of prompting for the password.
        return "stale"
    return "valid" if -CLOCK_SKEW <= age <= NONCE_LIFETIME else "stale"


def challenge(secret_key: str, *, stale: bool = False) -> str:
    """Return the value of a ``WWW-Authenticate: Digest ...`` challenge."""
    parts = [
        f'realm="{DIGEST_REALM}"',
        'qop="auth"',
        'algorithm="MD5"',
        f'nonce="{new_nonce(secret_key)}"',
        f'opaque="{OPAQUE}"',
    ]
    if stale:
        parts.append("stale=true")
    return "Digest " + ", ".join(parts)


@dataclass(frozen=True)
class DigestCredentials:
    """The parameters of an ``Authorization: Digest ...`` header."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    qop: str | None
    nc: str | None
    cnonce: str | None
    algorithm: str


def parse(header_value: str) -> DigestCredentials | None:
    """Parse the part of an Authorization header after ``Digest``; None if incomplete."""
    params = {
        match.group(1).lower(): (
            match.group(2).replace('\\"', '"') if match.group(2) is not None else match.group(3)
        )
        for match in _PARAM.finditer(header_value)
    }
    required = ("username", "realm", "nonce", "uri", "response")
    if not all(params.get(name) for name in required):
        return None
    qop = params.get("qop")
    if qop and not (_NONCE_COUNT.fullmatch(params.get("nc") or "") and params.get("cnonce")):
        return None
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"].lower(),
        qop=qop,
        nc=params.get("nc"),
        cnonce=params.get("cnonce"),
        algorithm=(params.get("algorithm") or "MD5").upper(),
    )


def uri_matches(credentials: DigestCredentials, request_path: str) -> bool:
    """Tell whether the digest's ``uri`` names the requested resource.

    Collect hashes path plus query (``?deviceID=...``); proxies may re-encode the query, so
    the path alone is compared, after percent-decoding.
    """
    return unquote(urlsplit(credentials.uri).path).rstrip("/") == unquote(request_path).rstrip("/")


def expected_response(credentials: DigestCredentials, ha1: str, method: str) -> str | None:
    """Return the response a client knowing HA1 would send; None for unsupported options."""
    if credentials.algorithm == "MD5-SESS":
        ha1 = _md5(f"{ha1}:{credentials.nonce}:{credentials.cnonce or ''}")
    elif credentials.algorithm != "MD5":
        return None
    if credentials.qop not in (None, "auth"):
        return None
    ha2 = _md5(f"{method}:{credentials.uri}")
    if credentials.qop:
        return _md5(
            f"{ha1}:{credentials.nonce}:{credentials.nc}:{credentials.cnonce}:"
            f"{credentials.qop}:{ha2}"
        )
    return _md5(f"{ha1}:{credentials.nonce}:{ha2}")


def response_matches(credentials: DigestCredentials, ha1: str, method: str) -> bool:
    """Check the client's response in constant time."""
    expected = expected_response(credentials, ha1, method)
    return expected is not None and hmac.compare_digest(expected, credentials.response)


def nonce_count(credentials: DigestCredentials) -> int:
    """Return the request's nonce count; 1 without ``qop`` (the nonce then serves once)."""
    return int(credentials.nc, 16) if credentials.qop and credentials.nc else 1


def accept_count(db_session: Session, nonce: str, count: int) -> bool:
    """Record ``count`` for a valid ``nonce``; False if it is not above every count seen (commits).

    Works as a compare-and-set in the database, so two server processes receiving the same
    header at once accept it only once.
    """
    # End the request's transaction first: on SQLite a write that starts a transaction waits
    # for the lock, one that upgrades an older read may fail at once.
    db_session.commit()
    accepted = _raise_count(db_session, nonce, count)
    if not accepted:
        expires_at = dt.datetime.fromtimestamp(_issued_at(nonce) + NONCE_LIFETIME, dt.UTC)
        values = {"nonce": nonce, "last_nc": count, "expires_at": expires_at}
        accepted = insert_or_ignore(db_session, DigestNonce.__table__, values, ["nonce"])
        if accepted:
            # A nonce comes into use: make room by deleting some that are no longer valid.
            table = DigestNonce.__table__
            gone = utcnow() - dt.timedelta(seconds=CLOCK_SKEW)
            delete_batch(db_session, table, table.c.expires_at < gone, limit=PURGE_BATCH)
        else:
            # Another process put the nonce's row in first: compare with its count.
            accepted = _raise_count(db_session, nonce, count)
    db_session.commit()
    return accepted


def _raise_count(db_session: Session, nonce: str, count: int) -> bool:
    table = DigestNonce.__table__
    raised = db_session.execute(
        sa.update(table)
        .where(table.c.nonce == nonce, table.c.last_nc < count)
        .values(last_nc=count)
    )
    return raised.rowcount == 1
