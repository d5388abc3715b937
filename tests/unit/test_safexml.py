"""The server's one XML rule (server/safexml.py): no DTD, whatever the encoding hides."""

from __future__ import annotations

import pytest

from server import safexml

DOCTYPE = '<!DOCTYPE d [<!ENTITY e "x">]>'
BODY = '<d id="f">&e;</d>'


@pytest.mark.parametrize(
    "data",
    [
        (DOCTYPE + BODY).encode("utf-8"),
        (DOCTYPE + BODY).encode("utf-16"),
        ('<?xml version="1.0"?>' + DOCTYPE + BODY).encode("utf-16-le"),
        ('<?xml version="1.0" encoding="UTF-16BE"?>' + DOCTYPE + BODY).encode("utf-16-be"),
        (DOCTYPE + BODY).encode("utf-32"),
        ('<!DOCTYPE d SYSTEM "file:///etc/passwd"><d/>').encode("utf-16"),
    ],
    ids=["utf-8", "utf-16", "utf-16le", "utf-16be declared", "utf-32", "external, utf-16"],
)
def test_a_dtd_is_refused_in_every_encoding(data):
    with pytest.raises(safexml.UnsafeXml):
        safexml.parse(data)


def test_a_dtd_streamed_in_utf16_is_refused_once_parsed():
    parser = safexml.pull_parser(events=("end",))
    data = (DOCTYPE + BODY).encode("utf-16")
    safexml.refuse_declarations(data)  # the bytes hide it
    parser.feed(data)
    with pytest.raises(safexml.UnsafeXml):
        safexml.refuse_dtd(parser.close())


def test_what_is_not_xml_is_malformed():
    # UTF-16 without a byte order mark nor a declaration: no parser can tell it is UTF-16.
    for data in (b"", b"\x00\x01 binary", b"<d>", b"   ", (DOCTYPE + BODY).encode("utf-16-le")):
        with pytest.raises(safexml.MalformedXml):
            safexml.parse(data)


def test_text_must_be_utf8():
    for data in (
        '<d id="f">é</d>'.encode("utf-16"),
        '<?xml version="1.0"?><d id="f">é</d>'.encode("utf-16-le"),
    ):
        with pytest.raises(safexml.NotUtf8):
            safexml.utf8_text(data, safexml.parse(data))
    latin = '<?xml version="1.0" encoding="ISO-8859-1"?><d>é</d>'.encode("latin-1")
    with pytest.raises(safexml.NotUtf8):
        safexml.utf8_text(latin, safexml.parse(latin))
    utf8 = '\ufeff<?xml version="1.0" encoding="utf-8"?><d>é</d>'.encode()
    assert safexml.utf8_text(utf8, safexml.parse(utf8)).startswith("<?xml")
