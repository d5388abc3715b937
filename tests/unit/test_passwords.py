"""Password hashing: argon2id at the parameters its authors recommend."""

from __future__ import annotations

from argon2 import PasswordHasher, Type

from server.auth import passwords
from tests.support.fast import REAL_PASSWORD_HASHER


def test_the_server_hashes_with_argon2id_at_the_recommended_parameters():
    # The suite swaps in cheap parameters for speed (tests/support/fast.py); the server's own
    # hasher, kept aside there, is the library's recommendation (RFC 9106's second choice).
    recommended = PasswordHasher()
    assert REAL_PASSWORD_HASHER.type is Type.ID
    assert (
        REAL_PASSWORD_HASHER.time_cost,
        REAL_PASSWORD_HASHER.memory_cost,
        REAL_PASSWORD_HASHER.parallelism,
    ) == (recommended.time_cost, recommended.memory_cost, recommended.parallelism)
    assert recommended.memory_cost >= 64 * 1024


def test_a_hash_made_with_weaker_parameters_is_renewed_at_next_sign_in():
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("a-long-password")
    original = passwords._hasher
    passwords._hasher = REAL_PASSWORD_HASHER
    try:
        assert passwords.verify_password(weak, "a-long-password")
        assert passwords.needs_rehash(weak)
        assert passwords.hash_password("a-long-password").startswith(
            "$argon2id$v=19$m=65536,t=3,p=4$"
        )
    finally:
        passwords._hasher = original
