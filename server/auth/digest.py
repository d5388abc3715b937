"""HTTP Digest authentication (RFC 7616, MD5) as ODK Collect speaks it (openrosa.md §5).

Collect answers a challenge, caches the nonce and then sends credentials preemptively with an
increasing ``nc``. Nonces here are stateless (a timestamp signed with the server's secret), so
any server process accepts any other's. When a nonce expires we re-challenge with
``stale=true``: Collect then retries on its own (re-sending the POST body) instead of treating
it as a wrong password. The stored secret is HA1 = MD5(email:realm:password), never the password.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from server.auth.passwords import DIGEST_REALM
from server.auth.tokens import sign

NONCE_LIFETIME = 30 * 60  # seconds; then stale=true makes Collect fetch a new one
OPAQUE = "6d657269742d636f6c6c656374"  # constant: Collect echoes it back

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def new_nonce(secret_key: str, now: float | None = None) -> str:
    """Return a nonce: the time it was issued, signed."""
    stamp = format(int(now if now is not None else time.time()), "x")
    return f"{stamp}.{sign(secret_key, stamp, 'digest-nonce')[:32]}"


def nonce_state(secret_key: str, nonce: str, now: float | None = None) -> str:
    """Return "valid", "stale" (genuine but expired) or "invalid"."""
    stamp, _, signature = nonce.partition(".")
    expected = sign(secret_key, stamp, "digest-nonce")[:32]
    if not hmac.compare_digest(signature, expected):
        return "invalid"
    try:
        issued = int(stamp, 16)
    except ValueError:
        return "invalid"
    age = (now if now is not None else time.time()) - issued
    return "valid" if -60 <= age <= NONCE_LIFETIME else "stale"


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
    if qop and not (params.get("nc") and params.get("cnonce")):
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
