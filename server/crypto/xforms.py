"""Putting a public key into an XForm, and the version suffix that goes with it.

ODK Collect encrypts a form's records when the form's ``<model>`` has a ``<submission>``
element carrying ``base64RsaPublicKey`` (openrosa.md §6). The XForm text the server stores is
the text it serves, and its MD5 is what tablets compare (openrosa.md §8.4), so the key is added
by a *textual* insertion into the stored text rather than by re-serialising a parsed tree: the
rest of the form stays byte for byte. The form is still parsed first with the hardened parser of
:mod:`server.forms.xform`, to find the right element (the model's own ``submission``, not one in
a comment, a CDATA section or an instance), and parsed again afterwards to prove that only the
key changed.

Version suffix: a form whose records become encrypted gets a new version string, so that
tablets holding the unencrypted form see an update and records of either kind name the XForm
they were filled on. As ODK Central does, the suffix is ``[encrypted:XXXXXXXX]``, the eight
characters encoding the time in milliseconds (48 bits, base64); unlike Central, the URL-safe
base64 alphabet is used, because a version appears in URLs (``/versions/<version>.xml``) where
a ``/`` would not survive.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from xml.sax.saxutils import quoteattr

from lxml import etree

from server.crypto.keys import load_public_key
from server.forms import xform

ATTRIBUTE = "base64RsaPublicKey"

# The tokens of an XML text that matter for finding elements: comments, CDATA, processing
# instructions and declarations are skipped whole; end tags; start tags, whose attribute values
# may legally contain ">" and are therefore matched as quoted strings.
_TOKEN = re.compile(
    r"<!--.*?-->"
    r"|<!\[CDATA\[.*?\]\]>"
    r"|<\?.*?\?>"
    r"|<![A-Za-z][^>]*>"
    r"|(?P<end></[^>]+>)"
    r"|(?P<start><(?P<name>[A-Za-z_][\w.:-]*)"
    r"(?P<attrs>(?:\s+[^\s=/>]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*)"
    r"\s*(?P<close>/?)>)",
    re.DOTALL,
)
_KEY_ATTR = re.compile(r"(\s" + ATTRIBUTE + r"\s*=\s*)(\"[^\"]*\"|'[^']*')")


def version_suffix(now: dt.datetime | None = None) -> str:
    """Return ``[encrypted:XXXXXXXX]`` for this moment (see the module docstring)."""
    moment = now or dt.datetime.now(dt.UTC)
    millis = int(moment.timestamp() * 1000) & 0xFFFF_FFFF_FFFF
    return f"[encrypted:{base64.urlsafe_b64encode(millis.to_bytes(6, 'big')).decode('ascii')}]"


def public_key_of(xform_xml: str) -> str | None:
    """Return the ``base64RsaPublicKey`` of an XForm's model submission, if it has one."""
    root = xform.parse(xform_xml.encode("utf-8"))
    submission = xform.model(root).find("xf:submission", xform.NS)
    if submission is None:
        return None
    return submission.get(ATTRIBUTE) or None


def _element_index(root: etree._Element, target: etree._Element) -> int:
    for index, element in enumerate(root.iter(etree.Element)):
        if element is target:
            return index
    raise xform.XFormError("element not found")


def _start_tags(text: str) -> list[re.Match[str]]:
    """Return the start tags of a document in order, the N-th being lxml's N-th element."""
    return [match for match in _TOKEN.finditer(text) if match.group("start")]


def _end_of(text: str, start: re.Match[str]) -> re.Match[str]:
    """Return the end tag that closes the element opened by ``start``."""
    depth = 1
    for match in _TOKEN.finditer(text, start.end()):
        if match.group("start") and not match.group("close"):
            depth += 1
        elif match.group("end"):
            depth -= 1
            if depth == 0:
                return match
    raise xform.XFormError("the model element is not closed")


def inject_public_key(xform_xml: str, public_key_b64: str) -> str:
    """Return the XForm with ``base64RsaPublicKey`` on its model's ``<submission>``.

    Creates ``<submission method="post" base64RsaPublicKey="..."/>`` at the end of the model
    when there is none; replaces a key already there. Everything else stays byte for byte.
    Raises :class:`server.forms.xform.XFormError` when the text is not an XForm or the result
    would differ elsewhere, ValueError when the key is not an RSA public key.
    """
    load_public_key(public_key_b64)  # refuse anything Collect could not read
    root = xform.parse(xform_xml.encode("utf-8"))
    model = xform.model(root)
    submission = model.find("xf:submission", xform.NS)
    tags = _start_tags(xform_xml)
    if len(tags) != sum(1 for _ in root.iter(etree.Element)):
        raise xform.XFormError("the form's elements could not be located in its text")
    value = quoteattr(public_key_b64)

    if submission is not None:
        tag = tags[_element_index(root, submission)]
        attrs = tag.group("attrs")
        if _KEY_ATTR.search(attrs):
            attrs = _KEY_ATTR.sub(lambda m: m.group(1) + value, attrs, count=1)
        else:
            attrs = f"{attrs} {ATTRIBUTE}={value}"
        close = "/" if tag.group("close") else ""
        new_tag = f"<{tag.group('name')}{attrs}{close}>"
        result = xform_xml[: tag.start()] + new_tag + xform_xml[tag.end() :]
    else:
        model_tag = tags[_element_index(root, model)]
        if model_tag.group("close"):
            raise xform.XFormError("the form's model is empty")
        end = _end_of(xform_xml, model_tag)
        prefix = model_tag.group("name").rpartition(":")[0]
        name = f"{prefix}:submission" if prefix else "submission"
        # Indent like the model's last line, one level deeper (pyxform writes two spaces).
        indent = re.search(r"\n[ \t]*$", xform_xml[: end.start()])
        element = f'<{name} method="post" {ATTRIBUTE}={value}/>'
        inserted = f"  {element}{indent.group(0)}" if indent else element
        result = xform_xml[: end.start()] + inserted + xform_xml[end.start() :]

    _check_only_key_changed(root, result, public_key_b64)
    return result


def _without_key(root: etree._Element) -> bytes:
    """Return a canonical form of a parsed XForm with its submission key and whitespace removed."""
    copy = etree.fromstring(etree.tostring(root))
    model = xform.model(copy)
    submission = model.find("xf:submission", xform.NS)
    if submission is not None:
        submission.attrib.pop(ATTRIBUTE, None)
    for element in copy.iter():
        if element.text is not None and not element.text.strip():
            element.text = None
        if element.tail is not None and not element.tail.strip():
            element.tail = None
    return etree.tostring(copy, method="c14n")


def _check_only_key_changed(before: etree._Element, result: str, public_key_b64: str) -> None:
    after = xform.parse(result.encode("utf-8"))
    submission = xform.model(after).find("xf:submission", xform.NS)
    if submission is None or submission.get(ATTRIBUTE) != public_key_b64:
        raise xform.XFormError("the public key could not be set in this form")
    if xform.model(before).find("xf:submission", xform.NS) is None:
        # The created element is the only addition: compare without it.
        if dict(submission.attrib) != {"method": "post", ATTRIBUTE: public_key_b64}:
            raise xform.XFormError("the public key could not be set in this form")
        submission.getparent().remove(submission)
    if _without_key(before) != _without_key(after):
        raise xform.XFormError("setting the public key would change more than the key")
