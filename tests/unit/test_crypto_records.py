"""Decrypting records encrypted exactly as ODK Collect encrypts them (openrosa.md §6).

The records come from :mod:`tests.support.collect_crypto`, an independent rewrite of Collect's
``EncryptionUtils``; the decryption under test is :func:`server.crypto.decrypt_record`.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import padding

from server import errors
from server.crypto import decrypt_record, load_private_key
from server.crypto.records import file_ivs, iv_seed, signature_text
from tests.support import collect_crypto

FORM_ID = "enquete_jeunes"
VERSION = "2024061201"
INSTANCE_ID = "uuid:6f1c2a9e-2b5d-4c8e-9a51-0f3e7d1b2c44"
XML = (
    '<data id="enquete_jeunes" version="2024061201"><nom>Awa Traoré</nom><age>17</age>'
    "<photo>1718200000001.jpg</photo><meta><audit>audit.csv</audit>"
    f"<instanceID>{INSTANCE_ID}</instanceID></meta></data>"
).encode()
PHOTO = b"\xff\xd8\xff\xe0" + hashlib.sha256(b"photo").digest() * 700 + b"\xff\xd9"
AUDIT = b"event,node,start,end\nform start,,1718200000000,\nquestion,/data/nom,1,2\n"


@pytest.fixture(scope="module")
def key_pair():
    pem, public = collect_crypto.generate_key_pair()
    return load_private_key(pem), public


@pytest.fixture(scope="module")
def other_key():
    pem, _ = collect_crypto.generate_key_pair()
    return load_private_key(pem)


def encrypt(public, media=(), *, version=VERSION, xml=XML, instance_id=INSTANCE_ID):
    return collect_crypto.encrypt_submission(
        public, xml, list(media), form_id=FORM_ID, version=version, instance_id=instance_id
    )


def decrypt(private, sent, *, files=None, version=VERSION, **kwargs):
    return decrypt_record(
        private,
        sent.instance_id,
        sent.base64_encrypted_key,
        files if files is not None else list(sent.files.items()),
        form_id=FORM_ID,
        version=version,
        signature_b64=sent.base64_signature,
        **kwargs,
    )


@pytest.mark.parametrize(
    "media",
    [
        [],
        [("1718200000001.jpg", PHOTO)],
        [
            ("1718200000001.jpg", PHOTO),
            ("1718200000002.m4a", b"\x00\x00\x00\x18ftypM4A " * 300),
            ("1718200000003.jpg", PHOTO[::-1]),
        ],
        [("1718200000001.jpg", PHOTO), ("audit.csv", AUDIT)],
    ],
    ids=["no media", "one photo", "three media", "photo and client audit"],
)
def test_a_collect_record_decrypts_to_its_xml_and_media_with_a_valid_signature(key_pair, media):
    private, public = key_pair
    sent = encrypt(public, media)
    record = decrypt(private, sent)
    assert record.xml == XML
    assert record.instance_id == INSTANCE_ID
    assert [(m.name, m.read()) for m in record.media] == media
    assert [m.encrypted_name for m in record.media] == [f"{n}.enc" for n, _ in media]
    assert [m.md5 for m in record.media] == [hashlib.md5(c).hexdigest() for _, c in media]
    assert [m.client_audit for m in record.media] == [n == "audit.csv" for n, _ in media]
    assert record.signature == "valid" and record.signature_valid


def test_ivs_are_the_md5_seed_with_one_byte_bumped_per_file_cumulatively(key_pair):
    _, public = key_pair
    # 17 files: the 17th bumps byte 0 a second time (§6 step 2, counter mod 16).
    media = [(f"f{i}.bin", bytes([i]) * (i + 1)) for i in range(16)]
    sent = encrypt(public, media)
    seed = hashlib.md5(INSTANCE_ID.encode() + sent.aes_key).digest()
    assert iv_seed(INSTANCE_ID, sent.aes_key) == seed
    ivs = file_ivs(seed, 17)
    assert ivs == sent.ivs
    assert ivs[0][0] == (seed[0] + 1) % 256 and ivs[0][1:] == seed[1:]
    assert ivs[16][0] == (seed[0] + 2) % 256
    assert ivs[16][1:] == bytes((b + 1) % 256 for b in seed[1:])


def test_a_seed_byte_at_255_wraps_to_zero():
    seed = bytes([255]) + bytes(15)
    assert file_ivs(seed, 1)[0][0] == 0


def test_a_record_from_a_form_without_version_signs_without_a_version_line(key_pair):
    private, public = key_pair
    sent = encrypt(public, [("a.jpg", PHOTO)], version=None)
    assert sent.signature_source.splitlines()[1] == sent.base64_encrypted_key
    assert b' version="' not in sent.envelope
    assert decrypt(private, sent, version=None).signature == "valid"
    # Claiming a version the tablet did not sign breaks the signature, not the decryption.
    assert decrypt(private, sent, version="").signature == "invalid"


def test_the_signature_text_is_the_one_collect_signs(key_pair):
    _, public = key_pair
    sent = encrypt(public, [("a.jpg", PHOTO), ("audit.csv", AUDIT)])
    text = signature_text(
        form_id=FORM_ID,
        version=VERSION,
        encrypted_key_b64=sent.base64_encrypted_key,
        instance_id=INSTANCE_ID,
        files=[
            ("a.jpg", hashlib.md5(PHOTO).hexdigest()),
            ("audit.csv", hashlib.md5(AUDIT).hexdigest()),
            ("submission.xml", hashlib.md5(XML).hexdigest()),
        ],
    )
    assert text == sent.signature_source.encode()


def test_the_wrong_private_key_is_400_12_and_says_nothing_secret(key_pair, other_key):
    _, public = key_pair
    sent = encrypt(public, [("a.jpg", PHOTO)])
    with pytest.raises(errors.Undecryptable) as caught:
        decrypt(other_key, sent)
    assert caught.value.code == "400.12" and caught.value.status == 400
    assert caught.value.details == {}
    message = str(caught.value)
    assert sent.base64_encrypted_key not in message and INSTANCE_ID not in message


def test_an_altered_media_file_decrypts_but_its_signature_fails(key_pair):
    private, public = key_pair
    sent = encrypt(public, [("a.jpg", PHOTO)])
    altered = bytearray(sent.files["a.jpg.enc"])
    altered[100] ^= 0x01  # CFB: flips one plaintext bit, padding untouched
    files = [
        ("a.jpg.enc", bytes(altered)),
        ("submission.xml.enc", sent.files["submission.xml.enc"]),
    ]
    record = decrypt(private, sent, files=files)
    assert record.xml == XML
    assert record.media[0].read() != PHOTO
    assert record.signature == "invalid" and not record.signature_valid


def test_an_altered_xml_is_caught_by_the_signature(key_pair):
    private, public = key_pair
    sent = encrypt(public)
    altered = bytearray(sent.files["submission.xml.enc"])
    altered[5] ^= 0x20
    record = decrypt(private, sent, files=[("submission.xml.enc", bytes(altered))])
    assert record.xml != XML
    assert record.signature == "invalid"


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-1],  # truncated: not whole blocks
        lambda data: data[:-16],  # a block short: the padding is gone
        lambda data: data[:-1] + bytes([data[-1] ^ 0x40]),  # the padding byte altered
        lambda data: b"",
    ],
    ids=["truncated", "last block missing", "padding altered", "empty"],
)
def test_a_damaged_file_is_400_12(key_pair, damage):
    private, public = key_pair
    sent = encrypt(public)
    files = [("submission.xml.enc", damage(sent.files["submission.xml.enc"]))]
    with pytest.raises(errors.Undecryptable):
        decrypt(private, sent, files=files)


def test_a_damaged_media_file_is_400_12_when_checked(key_pair):
    private, public = key_pair
    sent = encrypt(public, [("a.jpg", PHOTO)])
    files = [
        ("a.jpg.enc", sent.files["a.jpg.enc"][:-3]),
        ("submission.xml.enc", sent.files["submission.xml.enc"]),
    ]
    with pytest.raises(errors.Undecryptable):
        decrypt(private, sent, files=files)


def test_a_wrapped_key_that_is_not_base64_is_400_12(key_pair):
    private, public = key_pair
    sent = encrypt(public)
    with pytest.raises(errors.Undecryptable):
        decrypt_record(
            private,
            INSTANCE_ID,
            "not base64!",
            list(sent.files.items()),
            form_id=FORM_ID,
            version=VERSION,
        )


def test_a_wrapped_key_of_the_wrong_length_is_400_12(key_pair):
    private, public = key_pair
    sent = encrypt(public)
    wrapped = private.public_key().encrypt(
        b"sixteen byte key",
        padding.OAEP(
            mgf=padding.MGF1(padding.hashes.SHA256()), algorithm=padding.hashes.SHA256(), label=None
        ),
    )
    with pytest.raises(errors.Undecryptable):
        decrypt_record(
            private,
            INSTANCE_ID,
            base64.b64encode(wrapped).decode(),
            list(sent.files.items()),
            form_id=FORM_ID,
            version=VERSION,
        )


def test_a_signature_from_another_record_is_invalid_and_none_is_absent(key_pair):
    private, public = key_pair
    sent = encrypt(public, [("a.jpg", PHOTO)])
    other = encrypt(public, [("a.jpg", PHOTO)])
    record = decrypt_record(
        private,
        sent.instance_id,
        sent.base64_encrypted_key,
        list(sent.files.items()),
        form_id=FORM_ID,
        version=VERSION,
        signature_b64=other.base64_signature,
    )
    assert record.signature == "invalid"
    unsigned = decrypt_record(
        private,
        sent.instance_id,
        sent.base64_encrypted_key,
        list(sent.files.items()),
        form_id=FORM_ID,
        version=VERSION,
        signature_b64=None,
    )
    assert unsigned.signature == "absent" and unsigned.xml == XML
    garbage = decrypt_record(
        private,
        sent.instance_id,
        sent.base64_encrypted_key,
        list(sent.files.items()),
        form_id=FORM_ID,
        version=VERSION,
        signature_b64="Zm9v",
    )
    assert garbage.signature == "invalid"


def test_a_missing_media_file_leaves_the_xml_readable_and_the_signature_unverifiable(key_pair):
    private, public = key_pair
    sent = encrypt(public, [("a.jpg", PHOTO), ("b.jpg", PHOTO[::-1])])
    files = [
        ("a.jpg.enc", sent.files["a.jpg.enc"]),
        ("b.jpg.enc", None),
        ("submission.xml.enc", sent.files["submission.xml.enc"]),
    ]
    record = decrypt(private, sent, files=files)
    assert record.xml == XML
    assert record.media[0].read() == PHOTO
    assert not record.media[1].present
    assert record.signature == "unverifiable"
    with pytest.raises(errors.Undecryptable):
        record.media[1].read()


def test_media_stream_in_chunks_from_a_reopenable_source(key_pair):
    private, public = key_pair
    big = hashlib.sha256(b"video").digest() * (3 * 1024 * 1024 // 32) + b"tail"
    sent = encrypt(public, [("interview.mp4", big)])
    encrypted = sent.files["interview.mp4.enc"]
    opened = []

    def reader():
        # Blob-store-sized pieces of odd lengths, never aligned on AES blocks.
        opened.append(1)
        return (encrypted[i : i + 65_537] for i in range(0, len(encrypted), 65_537))

    files = [
        ("interview.mp4.enc", reader),
        ("submission.xml.enc", sent.files["submission.xml.enc"]),
    ]
    record = decrypt(private, sent, files=files)
    assert record.signature == "valid"
    assert record.media[0].size == len(big)
    chunks = list(record.media[0].chunks())
    assert len(chunks) > 1 and max(len(c) for c in chunks) <= 1024 * 1024
    assert b"".join(chunks) == big
    assert len(opened) == 2  # once for the signature, once for the reader: nothing kept


def test_a_one_shot_iterator_source_is_read_once_and_kept(key_pair):
    private, public = key_pair
    sent = encrypt(public, [("a.jpg", PHOTO)])
    encrypted = sent.files["a.jpg.enc"]
    one_shot = iter([encrypted[:1000], encrypted[1000:]])
    files = [("a.jpg.enc", one_shot), ("submission.xml.enc", sent.files["submission.xml.enc"])]
    record = decrypt(private, sent, files=files)
    assert record.media[0].read() == PHOTO and record.media[0].read() == PHOTO


def test_without_signature_check_media_are_not_read_until_asked(key_pair):
    private, public = key_pair
    sent = encrypt(public, [("a.jpg", PHOTO)])
    opened = []

    def reader():
        opened.append(1)
        return [sent.files["a.jpg.enc"]]

    files = [("a.jpg.enc", reader), ("submission.xml.enc", sent.files["submission.xml.enc"])]
    record = decrypt(private, sent, files=files, verify_signature=False)
    assert record.signature == "unchecked" and record.xml == XML
    assert opened == []
    assert record.media[0].read() == PHOTO and opened == [1]


def test_an_empty_media_file_round_trips(key_pair):
    private, public = key_pair
    sent = encrypt(public, [("empty.txt", b"")])
    assert len(sent.files["empty.txt.enc"]) == 16  # one block of padding
    record = decrypt(private, sent)
    assert record.media[0].read() == b"" and record.signature == "valid"


def test_non_ascii_instance_ids_and_file_names_use_utf_8(key_pair):
    private, public = key_pair
    sent = encrypt(public, [("entretien_é.m4a", b"son")], instance_id="uuid:élève-1")
    record = decrypt(private, sent)
    assert record.media[0].name == "entretien_é.m4a" and record.signature == "valid"
