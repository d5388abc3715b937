"""ODK Collect's record encryption, rewritten for tests from Collect's ``EncryptionUtils``.

An independent implementation (it imports nothing from ``server``), following Collect's
steps one by one, so that the server's decryption is tested against what a tablet produces
rather than against itself:

* ``EncryptedFormInformation``: a random 32-byte AES key; the IV seed is MD5 of the instanceID
  (UTF-8) then the key; the key is wrapped with "RSA/NONE/OAEPWithSHA256AndMGF1Padding"
  (BouncyCastle: SHA-256 digest, MGF1 with SHA-256) and base64-encoded without line breaks;
* ``getCipher``: before each file, ``++ivSeedArray[ivCounter % 16]; ++ivCounter``, then
  "AES/CFB/PKCS5Padding" (CFB with a full 16-byte feedback, PKCS#7 padding to 16 bytes);
* ``encryptSubmissionFiles``: every media file of the instance folder, then
  ``submission.xml`` last; ``appendFileSignatureSource`` adds ``name::md5hex`` of each
  plaintext file as it is encrypted;
* ``getBase64EncryptedElementSignature``: formId, version (only when not null), the base64
  key, the instanceID, then the file lines, each line ending in a newline; MD5 of that text,
  wrapped with the RSA key like the AES key;
* ``writeSubmissionManifest``: the envelope, in the encrypted-submission namespace, one
  ``<media>`` element per file, written by KXmlSerializer without an XML declaration.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

ENCRYPTED_NS = "http://www.opendatakit.org/xforms/encrypted"
OPENROSA_NS = "http://openrosa.org/xforms"

OAEP_SHA256_MGF1_SHA256 = padding.OAEP(
    mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def generate_key_pair() -> tuple[bytes, str]:
    """Return a new RSA-2048 private key (PKCS#1 PEM, as ``openssl genrsa`` writes) and the
    base64 DER public key an XLSForm's ``public_key`` setting holds."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, base64.b64encode(der).decode("ascii")


def _public_key(public_key_b64: str) -> rsa.RSAPublicKey:
    # X509EncodedKeySpec of the base64-decoded form attribute.
    key = serialization.load_der_public_key(base64.b64decode(public_key_b64))
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def _md5_hex(data: bytes) -> str:
    # FileUtils.getMd5Hash: lowercase hex, zero-padded to 32 characters.
    return f"{int.from_bytes(hashlib.md5(data).digest(), 'big'):032x}"


@dataclass
class EncryptedSubmission:
    """What Collect uploads for an encrypted record, plus what a test may want to check."""

    envelope: bytes
    files: dict[str, bytes]  # ".enc" name -> encrypted bytes, in encryption order
    instance_id: str
    aes_key: bytes
    ivs: list[bytes]
    signature_source: str
    base64_encrypted_key: str
    base64_signature: str
    media_names: list[str] = field(default_factory=list)


class _FormInformation:
    """Collect's ``EncryptedFormInformation``: the key, the IV seed and the signature text."""

    def __init__(
        self, form_id: str, form_version: str | None, instance_id: str, public_key: rsa.RSAPublicKey
    ) -> None:
        self.public_key = public_key
        self.symmetric_key = os.urandom(32)
        seed = hashlib.md5(instance_id.encode("utf-8") + self.symmetric_key).digest()
        self.iv_seed = bytearray(seed[i % len(seed)] for i in range(16))
        self.iv_counter = 0
        self.ivs: list[bytes] = []
        self.base64_key = base64.b64encode(
            public_key.encrypt(self.symmetric_key, OAEP_SHA256_MGF1_SHA256)
        ).decode("ascii")
        self.signature_source = ""
        self.append(form_id)
        if form_version is not None:
            self.append(form_version)
        self.append(self.base64_key)
        self.append(instance_id)

    def append(self, value: str) -> None:
        self.signature_source += value + "\n"

    def next_cipher(self):
        # ++ivSeedArray[ivCounter % ivSeedArray.length]; ++ivCounter; (Java bytes wrap)
        index = self.iv_counter % len(self.iv_seed)
        self.iv_seed[index] = (self.iv_seed[index] + 1) & 0xFF
        self.iv_counter += 1
        iv = bytes(self.iv_seed)
        self.ivs.append(iv)
        return Cipher(algorithms.AES(self.symmetric_key), CFB(iv)).encryptor()

    def encrypt_file(self, name: str, plaintext: bytes) -> bytes:
        self.append(f"{name}::{_md5_hex(plaintext)}")
        padder = symmetric_padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        encryptor = self.next_cipher()
        return encryptor.update(padded) + encryptor.finalize()

    def signature(self) -> str:
        digest = hashlib.md5(self.signature_source.encode("utf-8")).digest()
        wrapped = self.public_key.encrypt(digest, OAEP_SHA256_MGF1_SHA256)
        return base64.b64encode(wrapped).decode("ascii")


def encrypt_submission(
    public_key_b64: str,
    xml: bytes,
    media: list[tuple[str, bytes]] | None = None,
    *,
    form_id: str,
    version: str | None,
    instance_id: str,
) -> EncryptedSubmission:
    """Encrypt a record's XML and media files as Collect does; return the upload's parts."""
    info = _FormInformation(form_id, version, instance_id, _public_key(public_key_b64))
    files: dict[str, bytes] = {}
    names = []
    for name, content in media or []:
        files[f"{name}.enc"] = info.encrypt_file(name, content)
        names.append(name)
    # The submission is always named submission.xml in the instance folder's encrypted copy.
    files["submission.xml.enc"] = info.encrypt_file("submission.xml", xml)
    signature = info.signature()
    version_attr = f" version={quoteattr(version)}" if version is not None else ""
    media_xml = "".join(f"<media><file>{escape(n)}.enc</file></media>\n" for n in names)
    envelope = (
        f'<data xmlns="{ENCRYPTED_NS}" id={quoteattr(form_id)}{version_attr} encrypted="yes">'
        f"<base64EncryptedKey>{info.base64_key}</base64EncryptedKey>"
        f'<orx:meta xmlns:orx="{OPENROSA_NS}"><orx:instanceID>{escape(instance_id)}'
        "</orx:instanceID></orx:meta>\n"
        f"{media_xml}"
        "<encryptedXmlFile>submission.xml.enc</encryptedXmlFile>"
        f"<base64EncryptedElementSignature>{signature}</base64EncryptedElementSignature>"
        "</data>"
    ).encode()
    return EncryptedSubmission(
        envelope=envelope,
        files=files,
        instance_id=instance_id,
        aes_key=info.symmetric_key,
        ivs=info.ivs,
        signature_source=info.signature_source,
        base64_encrypted_key=info.base64_key,
        base64_signature=signature,
        media_names=names,
    )
