"""Random tokens, their lookup hashes, and sealing a token so that it can be shown again."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string

from cryptography.fernet import Fernet, InvalidToken

# ODK Central's app-user tokens are 64 characters of [A-Za-z0-9!$]; ours are 64 characters of
# letters and digits, which need no escaping anywhere (URL paths, QR codes, shell).
_ALPHABET = string.ascii_letters + string.digits
TOKEN_LENGTH = 64


def new_token(length: int = TOKEN_LENGTH) -> str:
    """Return a random token (64 letters and digits: about 380 bits)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def token_hash(token: str) -> str:
    """Return the SHA-256 under which a token is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _fernet(secret_key: str, purpose: str) -> Fernet:
    key = hashlib.sha256(f"{purpose}:{secret_key}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def seal(secret_key: str, token: str, purpose: str = "app-user-token") -> str:
    """Encrypt a token under the server's secret, for showing it again later (QR codes)."""
    return _fernet(secret_key, purpose).encrypt(token.encode("utf-8")).decode("ascii")


def unseal(secret_key: str, sealed: str, purpose: str = "app-user-token") -> str | None:
    """Decrypt a sealed token; None if the secret changed since it was sealed."""
    try:
        return _fernet(secret_key, purpose).decrypt(sealed.encode("ascii")).decode("utf-8")
    except InvalidToken:
        return None


def sign(secret_key: str, message: str, purpose: str) -> str:
    """Return a hex HMAC-SHA256 of ``message`` for one ``purpose``."""
    key = hashlib.sha256(f"{purpose}:{secret_key}".encode()).digest()
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()
