"""Managed keys: the private key sealed under a passphrase, and nothing secret kept in clear."""

from __future__ import annotations

import base64
import json
import unicodedata

import pytest
from cryptography.hazmat.primitives import serialization

from server import errors
from server.crypto import keys
from server.projects.models import ProjectKey
from tests.support import collect_crypto

PASSPHRASE = "Ségou, saison des pluies 2024"


@pytest.fixture(scope="module")
def sealed():
    private = keys.generate()
    public = keys.public_key_b64(private.public_key())
    row = ProjectKey(
        public=public, private=keys.seal_private_key(private, PASSPHRASE), managed=True
    )
    return private, row


def test_the_right_passphrase_gives_back_the_private_key(sealed):
    private, row = sealed
    unlocked = keys.unlock(row, PASSPHRASE)
    assert unlocked.private_numbers() == private.private_numbers()
    assert private.key_size == 2048


def test_the_passphrase_typed_decomposed_unlocks_the_same_key(sealed):
    private, row = sealed
    decomposed = unicodedata.normalize("NFD", PASSPHRASE)
    assert decomposed != PASSPHRASE
    assert keys.unlock(row, decomposed).private_numbers() == private.private_numbers()


@pytest.mark.parametrize("wrong", ["ségou, saison des pluies 2024", PASSPHRASE + " ", ""])
def test_a_wrong_passphrase_is_400_12(sealed, wrong):
    _, row = sealed
    with pytest.raises(errors.Undecryptable) as caught:
        keys.unlock(row, wrong)
    assert caught.value.code == "400.12"
    if wrong:
        assert wrong not in str(caught.value)


def test_nothing_secret_is_stored_in_clear(sealed):
    private, row = sealed
    stored = json.dumps(row.private)
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert PASSPHRASE not in stored and "PRIVATE KEY" not in stored
    assert base64.b64encode(der).decode() not in stored
    assert base64.b64encode(der[:64]).decode()[:40] not in stored
    assert row.private["kdf"]["name"] == "scrypt" and row.private["kdf"]["n"] >= 2**17
    assert row.private["cipher"]["name"] == "aes-256-gcm"
    assert len(base64.b64decode(row.private["kdf"]["salt"])) == 16
    assert len(base64.b64decode(row.private["cipher"]["nonce"])) == 12


def test_two_keys_under_one_passphrase_share_no_salt_or_nonce():
    first = keys.seal_private_key(keys.generate(), PASSPHRASE)
    second = keys.seal_private_key(keys.generate(), PASSPHRASE)
    assert first["kdf"]["salt"] != second["kdf"]["salt"]
    assert first["cipher"]["nonce"] != second["cipher"]["nonce"]


def test_a_private_half_moved_onto_another_keys_row_does_not_open(sealed):
    _, row = sealed
    other_public = keys.public_key_b64(keys.generate().public_key())
    moved = ProjectKey(public=other_public, private=row.private, managed=True)
    with pytest.raises(errors.Undecryptable):
        keys.unlock(moved, PASSPHRASE)


def test_a_damaged_or_absurd_row_is_400_12_not_a_crash(sealed):
    _, row = sealed
    damaged = json.loads(json.dumps(row.private))
    damaged["ciphertext"] = damaged["ciphertext"][:-8] + "AAAAAAA="
    huge = json.loads(json.dumps(row.private))
    huge["kdf"]["n"] = 2**30
    for private in (damaged, huge, {}, {"format": "other"}, None):
        with pytest.raises(errors.Undecryptable):
            keys.unlock(ProjectKey(public=row.public, private=private, managed=True), PASSPHRASE)
    with pytest.raises(errors.Undecryptable):
        keys.unlock(ProjectKey(public=row.public, private=row.private, managed=False), PASSPHRASE)


@pytest.mark.parametrize(
    ("passphrase", "code"),
    [
        (None, "400.2"),
        ("", "400.2"),
        (12345678901, "400.2"),
        ("court", "400.21"),
        ("123456789", "400.21"),
        ("x" * 1025, "400.8"),
    ],
)
def test_passphrases_are_at_least_ten_characters(passphrase, code):
    with pytest.raises(errors.BadRequest) as caught:
        keys.check_passphrase(passphrase)
    assert caught.value.code == code


def test_a_ten_character_passphrase_is_enough():
    assert keys.check_passphrase("0123456789") == "0123456789"


def test_a_private_key_supplied_for_an_export_is_read_from_pem():
    pem, public = collect_crypto.generate_key_pair()
    private = keys.load_private_key(pem)
    assert keys.public_key_b64(private.public_key()) == public
    pkcs8 = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert keys.load_private_key(pkcs8).private_numbers() == private.private_numbers()


@pytest.mark.parametrize(
    "pem",
    [b"", b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", b"\x00" * 40],
)
def test_something_that_is_not_a_private_key_is_400_12(pem):
    with pytest.raises(errors.Undecryptable) as caught:
        keys.load_private_key(pem)
    assert "AAAA" not in str(caught.value)


def test_a_passphrase_protected_pem_is_refused_without_asking():
    private = keys.generate()
    encrypted = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret-password"),
    )
    with pytest.raises(errors.Undecryptable):
        keys.load_private_key(encrypted)


def test_a_public_key_is_normalised_from_pem_body_with_line_breaks():
    _, public = collect_crypto.generate_key_pair()
    wrapped = "\n".join(public[i : i + 64] for i in range(0, len(public), 64))
    assert keys.normalise_public(wrapped) == public
    with pytest.raises(ValueError):
        keys.normalise_public("bm90IGEga2V5")
