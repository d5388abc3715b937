"""Password hashing (argon2id) and the HTTP Digest secret ODK Collect needs."""

from __future__ import annotations

import hashlib

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# The realm is part of every Digest secret: changing it invalidates Collect logins.
DIGEST_REALM = "merit-collect"
MIN_PASSWORD_LENGTH = 10

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


def hash_password(password: str) -> str:
    """Return an argon2id hash of ``password``."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Tell whether ``password`` matches ``password_hash`` (False for accounts without one).

    Always one argon2 computation: without a hash (no account, no password), a decoy hash of
    the password with the same parameters takes the time a real check would.
    """
    if not password_hash:
        _hasher.hash(password)
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Tell whether a hash was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)


def digest_ha1(username: str, password: str) -> str | None:
    """Return MD5(username:realm:password) for HTTP Digest, or None for non-ASCII passwords.

    ODK Collect encodes Digest credentials as ASCII (openrosa.md §5), so an account whose
    password is not ASCII cannot use Digest; it can still sign in to the console and the API.
    """
    try:
        material = f"{username}:{DIGEST_REALM}:{password}".encode("ascii")
    except UnicodeEncodeError:
        return None
    return hashlib.md5(material).hexdigest()  # noqa: S324 - required by the Digest scheme
