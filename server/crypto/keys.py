"""Key pairs: managed project keys kept under a passphrase, and private keys a user supplies.

A *managed* key is generated here (RSA-2048, what Collect and Central expect, openrosa.md §6).
Its public half is stored as base64 DER SubjectPublicKeyInfo, the exact text an XForm's
``base64RsaPublicKey`` takes. Its private half is stored only encrypted: scrypt (memory-hard,
random salt) turns the manager's passphrase into an AES-256-GCM key, and ``ProjectKey.private``
holds the KDF parameters, salt, nonce and ciphertext, never the passphrase nor anything derived
from it in clear. The GCM tag authenticates the ciphertext together with the public key
(associated data), so a wrong passphrase, an altered row or a private half moved onto another
key's row all fail the same way: 400.12, with no hint of which.

The private key exists in clear only in memory, for the duration of one export; nothing here
logs, stores or returns a passphrase, and :class:`~server.errors.Undecryptable` messages carry
no secret.

Passphrases are normalised to Unicode NFC before use: the same French passphrase typed on two
systems (one composing "é", one not) must unlock the same key.
"""

from __future__ import annotations

import base64
import binascii
import os
import unicodedata
from typing import Any

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from flask_babel import gettext

from server import errors
from server.projects.models import ProjectKey

MIN_PASSPHRASE = 10
MAX_PASSPHRASE = 1024
MAX_HINT = 500
RSA_BITS = 2048

# scrypt with N=2^17, r=8, p=1: 128 MiB and about half a second per unlock, the parameters
# OWASP's password storage guidance gives for scrypt. Stored with each key, so that they can be
# raised later without breaking the keys already made.
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
# Bounds on parameters read back from the database, so that a damaged row cannot make an
# unlock allocate gigabytes.
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16

_FORMAT = "merit-managed-key-1"
_AAD_PREFIX = b"merit-collect managed project key v1\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def public_key_b64(key: rsa.RSAPublicKey) -> str:
    """Return the base64 DER SubjectPublicKeyInfo an XForm's ``base64RsaPublicKey`` takes."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _b64(der)


def load_public_key(public_b64: str) -> rsa.RSAPublicKey:
    """Read a ``base64RsaPublicKey`` value; raise ValueError when it is not an RSA key."""
    try:
        der = base64.b64decode("".join(public_b64.split()), validate=True)
        key = serialization.load_der_public_key(der)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError("not a base64 DER RSA public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def normalise_public(public_b64: str) -> str:
    """Return a public key's canonical text (whitespace and PEM line breaks removed)."""
    return public_key_b64(load_public_key(public_b64))


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    """Read a private key supplied for one export (PEM, PKCS#1 or PKCS#8, unencrypted).

    Raises Undecryptable, without echoing anything of what was sent, when it is not one.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise errors.Undecryptable() from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise errors.Undecryptable()
    return key


def check_passphrase(passphrase: Any) -> str:
    """Return the passphrase NFC-normalised; raise 400 when missing, too short or too long."""
    if not isinstance(passphrase, str) or not passphrase:
        raise errors.MissingParameter(field="passphrase")
    passphrase = unicodedata.normalize("NFC", passphrase)
    if len(passphrase) < MIN_PASSPHRASE:
        raise errors.PasswordTooShort(minimum=MIN_PASSPHRASE)
    if len(passphrase) > MAX_PASSPHRASE:
        raise errors.UnexpectedValue(
            field="passphrase",
            reason=gettext("at most %(maximum)s characters", maximum=MAX_PASSPHRASE),
        )
    return passphrase


def _aad(public_b64: str) -> bytes:
    return _AAD_PREFIX + public_b64.encode("ascii")


def _kdf(salt: bytes, n: int, r: int, p: int) -> Scrypt:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p)


def seal_private_key(private_key: rsa.RSAPrivateKey, passphrase: str) -> dict[str, Any]:
    """Return the JSON stored in ``ProjectKey.private``: the private key under the passphrase."""
    public_b64 = public_key_b64(private_key.public_key())
    salt = os.urandom(16)
    nonce = os.urandom(12)
    secret = _kdf(salt, SCRYPT_N, SCRYPT_R, SCRYPT_P).derive(passphrase.encode("utf-8"))
    der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ciphertext = AESGCM(secret).encrypt(nonce, der, _aad(public_b64))
    return {
        "format": _FORMAT,
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)},
        "cipher": {"name": "aes-256-gcm", "nonce": _b64(nonce)},
        "ciphertext": _b64(ciphertext),
    }


def unlock(project_key: ProjectKey, passphrase: str) -> rsa.RSAPrivateKey:
    """Return a managed key's private key, in memory only; raise Undecryptable if it will not.

    A wrong passphrase, a self-managed key (nothing private stored) and a damaged row all
    raise the same 400.12.
    """
    sealed = project_key.private
    if not project_key.managed or not isinstance(sealed, dict) or not isinstance(passphrase, str):
        raise errors.Undecryptable()
    try:
        if sealed.get("format") != _FORMAT:
            raise ValueError("unknown format")
        kdf, cipher = sealed["kdf"], sealed["cipher"]
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        if kdf["name"] != "scrypt" or cipher["name"] != "aes-256-gcm":
            raise ValueError("unknown algorithm")
        if not (2 <= n <= _MAX_N and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
            raise ValueError("KDF parameters out of bounds")
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        ciphertext = base64.b64decode(sealed["ciphertext"], validate=True)
        secret = _kdf(salt, n, r, p).derive(
            unicodedata.normalize("NFC", passphrase).encode("utf-8")
        )
        der = AESGCM(secret).decrypt(nonce, ciphertext, _aad(project_key.public))
        key = serialization.load_der_private_key(der, password=None)
    except (InvalidTag, KeyError, TypeError, ValueError, binascii.Error):
        raise errors.Undecryptable() from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise errors.Undecryptable()
    return key


def generate() -> rsa.RSAPrivateKey:
    """Generate a new RSA-2048 key pair (public exponent 65537)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
