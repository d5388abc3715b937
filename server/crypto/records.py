"""Decrypting one record exactly as ODK Collect encrypted it (openrosa.md §6).

Collect (``EncryptionUtils``) wraps a random AES-256 key with the form's RSA public key, derives
one IV per file from MD5(instanceID ‖ key), encrypts every media file of the instance folder
and then the record's XML with AES-CFB, and signs the whole with an MD5 digest wrapped with RSA
as well. This module undoes that, one record at a time:

    record = decrypt_record(private_key, instance_id, encrypted_key_b64,
                            [("photo.jpg.enc", photo_source), ("submission.xml.enc", xml)],
                            form_id="menage", version="2024050701", signature_b64=sig)
    record.xml            # the plaintext submission.xml
    record.media[0].name  # "photo.jpg"; .chunks() streams its plaintext
    record.signature      # "valid", "invalid", "absent", "unverifiable" or "unchecked"

A file's *source* is bytes, an iterable of byte chunks, or a function that returns a new
iterable each time it is called (a blob in the store). Media are decrypted chunk by chunk and
never held whole in memory, except when a source is a one-shot iterator, which cannot be read
twice. Every failure to decrypt (wrong key, truncated or altered data, bad padding) raises
:class:`server.errors.Undecryptable` (400.12), whose message carries no secret and no detail of
which step failed. A signature that does not match is reported, not raised: the data may still
be read, flagged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from server import errors

# What a file's encrypted bytes can be given as (see the module docstring).
Source = bytes | Iterable[bytes] | Callable[[], Iterable[bytes]]

SignatureStatus = Literal["valid", "invalid", "absent", "unverifiable", "unchecked"]

AES_KEY_BYTES = 32
BLOCK = 16
# Largest decrypted submission.xml kept in memory (the intake limit for plaintext XML).
MAX_XML_BYTES = 20 * 1024 * 1024
# Re-chunk the plaintext so that a source giving one huge bytes object still streams.
CHUNK = 1024 * 1024

# §6 step 1: RSA-OAEP with SHA-256 *and* MGF1-SHA-256, empty label (BouncyCastle's
# "RSA/NONE/OAEPWithSHA256AndMGF1Padding" on the tablet).
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _md5() -> hashlib._Hash:
    # MD5 is what the protocol prescribes for IV seeds and signatures, not our choice.
    return hashlib.md5(usedforsecurity=False)


def b64decode(text: str | None) -> bytes:
    """Decode strict base64 (whitespace ignored); raise Undecryptable when it is not."""
    if not text:
        raise errors.Undecryptable()
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise errors.Undecryptable() from None


def unwrap(private_key: rsa.RSAPrivateKey, wrapped: bytes) -> bytes:
    """Undo §6 step 1's RSA-OAEP wrapping; raise Undecryptable when the key does not fit."""
    try:
        return private_key.decrypt(wrapped, OAEP)
    except ValueError:
        raise errors.Undecryptable() from None


def iv_seed(instance_id: str, aes_key: bytes) -> bytes:
    """Return §6 step 2's seed: MD5(UTF-8(instanceID) ‖ aesKey)."""
    digest = _md5()
    digest.update(instance_id.encode("utf-8"))
    digest.update(aes_key)
    return digest.digest()


def file_ivs(seed: bytes, count: int) -> list[bytes]:
    """Return the IVs of files 0..count-1 (§6 step 2: one byte bumped per file, cumulative)."""
    running = bytearray(seed)
    ivs = []
    for index in range(count):
        running[index % BLOCK] = (running[index % BLOCK] + 1) % 256
        ivs.append(bytes(running))
    return ivs


def _chunks_of(source: bytes | Iterable[bytes]) -> Iterator[bytes]:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        for start in range(0, len(data), CHUNK):
            yield data[start : start + CHUNK]
        return
    for chunk in source:
        for start in range(0, len(chunk), CHUNK):
            yield bytes(chunk[start : start + CHUNK])


def decrypt_stream(aes_key: bytes, iv: bytes, encrypted: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the plaintext of one file, chunk by chunk (§6 step 4).

    AES-256-CFB with 128-bit feedback, then PKCS#7 padding removed. CFB keeps lengths, so the
    last 16 bytes are held back until the end, where the padding is checked and stripped.
    Raises Undecryptable (while iterating) on a length or padding that cannot be right.
    """
    try:
        decryptor = Cipher(algorithms.AES(aes_key), CFB(iv)).decryptor()
    except ValueError:
        raise errors.Undecryptable() from None
    held = b""
    total = 0
    for chunk in _chunks_of(encrypted):
        if not chunk:
            continue
        total += len(chunk)
        held += decryptor.update(chunk)
        if len(held) > BLOCK:
            yield held[:-BLOCK]
            held = held[-BLOCK:]
    held += decryptor.finalize()
    # Collect pads every file to whole blocks, so a ciphertext is 16, 32, ... bytes long.
    if total == 0 or total % BLOCK or len(held) != BLOCK:
        raise errors.Undecryptable()
    pad = held[-1]
    if not 1 <= pad <= BLOCK or held[-pad:] != bytes([pad]) * pad:
        raise errors.Undecryptable()
    if pad < BLOCK:
        yield held[:-pad]


def original_name(encrypted_name: str) -> str:
    """Return a file's name before encryption (Collect appends ``.enc``)."""
    return encrypted_name[: -len(".enc")] if encrypted_name.endswith(".enc") else encrypted_name


@dataclass
class DecryptedFile:
    """One media file of a decrypted record (client audit log included).

    ``size`` and ``md5`` (hex, of the plaintext) are known once the file has been read for
    the signature check (None when the check was skipped or the file is missing).
    :meth:`chunks` streams the plaintext, decrypting as it reads.
    """

    name: str
    encrypted_name: str
    index: int
    present: bool
    size: int | None = None
    md5: str | None = None
    _aes_key: bytes = field(default=b"", repr=False)
    _iv: bytes = field(default=b"", repr=False)
    _source: Source | None = field(default=None, repr=False)
    _kept: list[bytes] | None = field(default=None, repr=False)

    @property
    def client_audit(self) -> bool:
        """Tell whether this is the client audit log (the same rule as intake's)."""
        return self.name.lower().startswith("audit.csv")

    def chunks(self) -> Iterator[bytes]:
        """Yield the plaintext; raise Undecryptable if the file is missing or altered."""
        if not self.present:
            raise errors.Undecryptable()
        if self._kept is not None:
            yield from self._kept
            return
        yield from decrypt_stream(self._aes_key, self._iv, _open(self._source))

    def read(self) -> bytes:
        """Return the whole plaintext (small files only: audit logs, not videos)."""
        return b"".join(self.chunks())


@dataclass
class DecryptedRecord:
    """A record decrypted: its submission XML, its media, and what its signature says."""

    instance_id: str
    xml: bytes
    media: list[DecryptedFile]
    signature: SignatureStatus

    @property
    def signature_valid(self) -> bool:
        """Tell whether the signature was checked and matched."""
        return self.signature == "valid"


def _open(source: Source | None) -> Iterable[bytes]:
    if source is None:
        raise errors.Undecryptable()
    if callable(source):
        return source()
    return source


def _reopenable(source: Source | None) -> bool:
    return callable(source) or isinstance(source, bytes | bytearray | memoryview)


def signature_text(
    *,
    form_id: str,
    version: str | None,
    encrypted_key_b64: str,
    instance_id: str,
    files: list[tuple[str, str]],
) -> bytes:
    """Return the text §6 step 5 signs: one line per item, each ending in a newline.

    ``files`` are (original name, md5 hex of the plaintext): media in manifest order, then the
    XML (``submission.xml``). The version line is left out when the record has no version.
    """
    lines = [form_id]
    if version is not None:
        lines.append(version)
    lines += [encrypted_key_b64, instance_id]
    lines += [f"{name}::{md5}" for name, md5 in files]
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def check_signature(
    private_key: rsa.RSAPrivateKey, signature_b64: str | None, text: bytes
) -> SignatureStatus:
    """Compare the record's signature with the MD5 of ``text`` (§6 step 5)."""
    if not signature_b64:
        return "absent"
    try:
        wrapped = base64.b64decode("".join(signature_b64.split()), validate=True)
        signed = private_key.decrypt(wrapped, OAEP)
    except (binascii.Error, ValueError):
        return "invalid"
    expected = _md5()
    expected.update(text)
    return "valid" if hmac.compare_digest(signed, expected.digest()) else "invalid"


def decrypt_record(
    private_key: rsa.RSAPrivateKey,
    instance_id: str,
    encrypted_key_b64: str,
    files: list[tuple[str, Source | None]],
    *,
    form_id: str,
    version: str | None,
    signature_b64: str | None = None,
    verify_signature: bool = True,
) -> DecryptedRecord:
    """Decrypt one record: ``files`` are its media in manifest order, then its XML last.

    Each file is (name as sent, ``.enc`` included; source of its encrypted bytes), with None
    for a media file that has not arrived. ``version`` is the envelope's version attribute
    (None when it has none: the signature then has no version line). With
    ``verify_signature`` every media file is read once to check the signature; without it,
    media are not read at all and the status is "unchecked". Raises Undecryptable.
    """
    if not files:
        raise errors.Undecryptable()
    aes_key = unwrap(private_key, b64decode(encrypted_key_b64))
    if len(aes_key) != AES_KEY_BYTES:
        raise errors.Undecryptable()
    # §6 steps 2 and 3: media take IVs 0..n-1 in manifest order, the XML takes IV n.
    ivs = file_ivs(iv_seed(instance_id, aes_key), len(files))
    *media_files, (xml_name, xml_source) = files

    media: list[DecryptedFile] = []
    for index, (name, source) in enumerate(media_files):
        media.append(
            DecryptedFile(
                name=original_name(name),
                encrypted_name=name,
                index=index,
                present=source is not None,
                _aes_key=aes_key,
                _iv=ivs[index],
                _source=source,
            )
        )

    xml = bytearray()
    for chunk in decrypt_stream(aes_key, ivs[-1], _open(xml_source)):
        xml += chunk
        if len(xml) > MAX_XML_BYTES:
            raise errors.Undecryptable()

    status: SignatureStatus = "unchecked"
    if verify_signature:
        for item in media:
            if item.present:
                _measure(item)
        if any(not item.present for item in media):
            status = "unverifiable"
        else:
            digest = _md5()
            digest.update(bytes(xml))
            text = signature_text(
                form_id=form_id,
                version=version,
                encrypted_key_b64=encrypted_key_b64,
                instance_id=instance_id,
                files=[(item.name, item.md5 or "") for item in media]
                + [(original_name(xml_name), digest.hexdigest())],
            )
            status = check_signature(private_key, signature_b64, text)
    return DecryptedRecord(instance_id=instance_id, xml=bytes(xml), media=media, signature=status)


def _measure(item: DecryptedFile) -> None:
    """Read a media file once for its size and MD5; keep it only if it cannot be re-read."""
    keep = not _reopenable(item._source)
    kept: list[bytes] = []
    digest = _md5()
    size = 0
    for chunk in decrypt_stream(item._aes_key, item._iv, _open(item._source)):
        digest.update(chunk)
        size += len(chunk)
        if keep:
            kept.append(chunk)
    item.size, item.md5 = size, digest.hexdigest()
    if keep:
        item._kept = kept
