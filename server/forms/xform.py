"""Reading XForm XML safely, and the few edits the server makes to an XForm's text.

Uploaded XForms come from outside: they are parsed by the server's one XML rule
(:mod:`server.safexml`: no entity expansion, no DTD, no network, no huge trees, and any
``DOCTYPE`` refused in whatever encoding), which rules out entity bombs and external entities.
The XForm text the server stores is the text it serves; the only edit it ever makes is
:func:`set_version` (``?version=`` on publish, as ODK Central does), after which the hash is
recomputed from the new text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from lxml import etree

from server import safexml

XFORMS = "http://www.w3.org/2002/xforms"
XHTML = "http://www.w3.org/1999/xhtml"
JR = "http://openrosa.org/javarosa"
ORX = "http://openrosa.org/xforms"
ODK = "http://www.opendatakit.org/xforms"
NS = {"xf": XFORMS, "h": XHTML, "jr": JR, "orx": ORX, "odk": ODK}

# Largest XForm accepted: the biggest real forms (REACH MSNA tools) compile to about 2 MB.
MAX_XFORM_BYTES = 10_000_000


class XFormError(ValueError):
    """The bytes are not a readable XForm; the message says why (English, for the details)."""


@dataclass(frozen=True)
class Identity:
    """What names an XForm: formID, version, title and the primary instance's root element."""

    form_id: str
    version: str
    title: str
    root: str


def parse(data: bytes) -> etree._Element:
    """Parse XML bytes with the hardened parser; raise :class:`XFormError` when unsafe or bad."""
    if len(data) > MAX_XFORM_BYTES:
        raise XFormError(f"the XML is larger than {MAX_XFORM_BYTES} bytes")
    try:
        return safexml.parse(data)
    except safexml.UnsafeXml:
        raise XFormError("a DOCTYPE or ENTITY declaration is not allowed in a form") from None
    except safexml.MalformedXml as exc:
        raise XFormError(f"the XML is not well-formed: {exc}") from None


def model(root: etree._Element) -> etree._Element:
    """Return the XForm's ``model`` element; raise :class:`XFormError` when it has none."""
    if root.tag != f"{{{XHTML}}}html":
        raise XFormError("the root element is not h:html (an XForm starts with <h:html>)")
    found = root.find("h:head/xf:model", NS)
    if found is None:
        raise XFormError("the form has no <model> in <h:head>")
    return found


def primary_instance(root: etree._Element) -> etree._Element:
    """Return the root element of the primary instance (the first ``instance`` of the model)."""
    instance = model(root).find("xf:instance", NS)
    if instance is None:
        raise XFormError("the model has no <instance>")
    children = [child for child in instance if isinstance(child.tag, str)]
    if len(children) != 1:
        raise XFormError("the primary instance must have exactly one root element")
    return children[0]


def local_name(element: etree._Element) -> str:
    """Return an element's name without its namespace."""
    return etree.QName(element).localname


def identity(root: etree._Element) -> Identity:
    """Read formID, version and title the way ODK Collect does (openrosa.md §7)."""
    data = primary_instance(root)
    form_id = (data.get("id") or "").strip()
    if not form_id:
        raise XFormError("the primary instance's root element has no id attribute (the formID)")
    version = data.get("version")
    if version is None:
        version = data.get(f"{{{ORX}}}version", "")
    title_element = root.find("h:head/h:title", NS)
    title = "".join(title_element.itertext()).strip() if title_element is not None else ""
    return Identity(form_id=form_id, version=version, title=title, root=local_name(data))


_INSTANCE_OPEN = re.compile(r"<instance(\s[^>]*)?>")
_START_TAG = re.compile(r"<(?P<name>[A-Za-z_][\w.:-]*)(?P<attrs>(?:\s[^>]*?)?)(?P<end>/?)>")
_VERSION_ATTR = re.compile(r"(\sversion\s*=\s*)(\"[^\"]*\"|'[^']*')")


def set_version(xml: str, version: str) -> str:
    """Return the XForm text with the primary instance's ``version`` set to ``version``.

    Only that one attribute changes; the rest of the text stays byte for byte. Raises
    :class:`XFormError` when the text does not have the shape pyxform writes.
    """
    opening = _INSTANCE_OPEN.search(xml)
    if opening is None:
        raise XFormError("the form has no <instance>")
    tag = _START_TAG.search(xml, opening.end())
    if tag is None:
        raise XFormError("the primary instance has no root element")
    attrs = tag.group("attrs")
    value = quoteattr(version)
    if _VERSION_ATTR.search(attrs):
        attrs = _VERSION_ATTR.sub(lambda m: m.group(1) + value, attrs, count=1)
    else:
        attrs = f"{attrs} version={value}"
    new_tag = f"<{tag.group('name')}{attrs}{tag.group('end')}>"
    result = xml[: tag.start()] + new_tag + xml[tag.end() :]
    before = identity(parse(xml.encode("utf-8")))
    after = identity(parse(result.encode("utf-8")))
    if after.version != version or after.form_id != before.form_id:
        raise XFormError("the version could not be set in this form")
    return result
