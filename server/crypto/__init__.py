"""Encrypted records (openrosa.md §6): keys, decryption, and public keys in XForms.

    records     decrypt_record: one record, exactly as ODK Collect encrypted it
    decryptor   decryptor: the function exports call per stored record version; the keys a
                form's versions carry (form_keys) and its records use (record_keys)
    keys        managed key pairs under a passphrase (scrypt + AES-256-GCM); unlock;
                reading a private key supplied for one export
    managed     create_managed_key (turn managed encryption on), prepare_for_publish
    xforms      inject_public_key, version_suffix

Nothing in this package stores, logs or returns a passphrase or a private key in clear; every
failure to decrypt is :class:`server.errors.Undecryptable` (400.12) with a fixed message.
"""

from __future__ import annotations

from server.crypto.decryptor import Decryptor, decryptor, form_keys, record_keys
from server.crypto.keys import load_private_key, public_key_b64, unlock
from server.crypto.managed import create_managed_key, ensure_key, prepare_for_publish
from server.crypto.records import DecryptedFile, DecryptedRecord, decrypt_record
from server.crypto.xforms import inject_public_key, public_key_of, version_suffix

__all__ = [
    "DecryptedFile",
    "DecryptedRecord",
    "Decryptor",
    "create_managed_key",
    "decrypt_record",
    "decryptor",
    "ensure_key",
    "form_keys",
    "inject_public_key",
    "load_private_key",
    "prepare_for_publish",
    "public_key_b64",
    "public_key_of",
    "record_keys",
    "unlock",
    "version_suffix",
]
