"""XML from clients, read one way: a hardened parser, and no DTD in any encoding.

Every XML document the server parses from clients goes through here: records through OpenRosa
and REST, and decrypted records (:mod:`server.submissions.parsing`); XForms, media XML files and
a workbook's index (:mod:`server.forms.xform`); the parts of an uploaded workbook, streamed by
:mod:`server.forms.compiler` with :func:`pull_parser` and :func:`refuse_dtd`.

The rule: no ``DOCTYPE`` (and so no ``ENTITY``). Neither ODK Collect, Enketo, pyxform nor Excel
writes one, and a DTD is how entity bombs and external entities get in. It is checked twice:

* on the bytes, before parsing: refuses at once what is written in UTF-8 or any encoding that
  keeps ASCII as it is;
* on the parsed document (its ``docinfo``): lxml decodes UTF-16, UTF-32 and declared
  encodings, which hide a DOCTYPE from a byte search (issue 16: a UTF-16 record with a
  DOCTYPE passed the byte filter). Meanwhile the parser loads no DTD, expands no entity and
  touches no network, so nothing declared there has any effect before the refusal.

Text the server stores and serves (a record, an XForm) must moreover be UTF-8, as every ODK
client writes it: :func:`utf8_text`.
"""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

_DECLARATION = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)


class UnsafeXml(ValueError):
    """The XML declares a DTD (or entities): refused, whatever it declares."""


class MalformedXml(ValueError):
    """The bytes are not well-formed XML; the message is lxml's."""


class NotUtf8(ValueError):
    """The XML is in another encoding than UTF-8; the message names it."""


def _options(**overrides: Any) -> dict[str, Any]:
    return {
        "resolve_entities": False,
        "no_network": True,
        "load_dtd": False,
        "dtd_validation": False,
        "huge_tree": False,
        **overrides,
    }


def parser(**overrides: Any) -> etree.XMLParser:
    """Return a new hardened parser (lxml parsers must not be shared between threads)."""
    return etree.XMLParser(**_options(**overrides))


def pull_parser(**overrides: Any) -> etree.XMLPullParser:
    """Return a new hardened parser fed piece by piece (``events`` and ``tag`` as lxml's)."""
    return etree.XMLPullParser(**_options(**overrides))


def refuse_declarations(data: bytes) -> None:
    """Refuse bytes that spell ``<!DOCTYPE`` or ``<!ENTITY`` (the fast half of the rule)."""
    if _DECLARATION.search(data):
        raise UnsafeXml("a DOCTYPE or ENTITY declaration is not allowed")


def refuse_dtd(root: etree._Element) -> None:
    """Refuse a parsed document that declared a DTD, in whatever encoding it was written."""
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise UnsafeXml("a DOCTYPE declaration is not allowed")


def parse(data: bytes, **overrides: Any) -> etree._Element:
    """Parse a whole document from a client; return its root element.

    Raises :class:`UnsafeXml` for a DTD, :class:`MalformedXml` for anything lxml cannot read.
    The caller bounds the size first.
    """
    refuse_declarations(data)
    try:
        root = etree.fromstring(data, parser(**overrides))
    except etree.XMLSyntaxError as exc:
        raise MalformedXml(str(exc)) from None
    if root is None:
        raise MalformedXml("the document is empty")
    refuse_dtd(root)
    return root


def utf8_text(data: bytes, root: etree._Element) -> str:
    """Return the text of a document :func:`parse` read from ``data``; refuse other encodings.

    Checked on what the document declares and on its bytes (UTF-16 without a byte order mark
    or declaration still decodes as "UTF-8" with NUL bytes, which XML cannot hold).
    """
    declared = (root.getroottree().docinfo.encoding or "UTF-8").upper()
    if declared not in ("UTF-8", "UTF8", "US-ASCII", "ASCII"):
        raise NotUtf8(declared)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NotUtf8("not UTF-8") from None
    if "\x00" in text:
        raise NotUtf8("UTF-16 or UTF-32")
    return text
