"""Reading a submission's XML safely, and turning it into the document exports work from.

ODK Collect's records never carry a DTD: any DOCTYPE is refused, in whatever encoding it is
written, by the server's one XML rule (:mod:`server.safexml`): no entity expansion, no external
fetch, no billion laughs. The document's depth and element count are bounded here, and a record
must be UTF-8, as Collect writes it (it is stored and served as text).

A record must be the form's instance (:func:`check_instance`): what the server stores it serves
again, as received, to coordinators' browsers, so a web page sent in a record's place (an XHTML
root holding a ``<script>``, issue 16) is refused at intake.

The parsed *document* mirrors the XML: a dict per element with children, the text of each leaf
(None when empty), and a list for every repeat the form's field schema names, even when the
record holds one instance or none. Values stay text; exports type them from the schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flask_babel import gettext as _
from lxml import etree

from server import errors, safexml
from server.forms.xform import XFORMS

MAX_XML_BYTES = 20 * 1024 * 1024
MAX_DEPTH = 64
MAX_ELEMENTS = 200_000


ENCRYPTED_NAMESPACES = {
    "http://www.opendatakit.org/xforms/encrypted",
    "http://opendatakit.org/submissions",
}


@dataclass
class ParsedSubmission:
    """What intake needs from a submission's XML."""

    root: etree._Element
    text: str  # the XML as received, decoded (UTF-8)
    form_id: str
    version: str
    instance_id: str | None
    deprecated_id: str | None
    instance_name: str | None
    encrypted: bool = False
    encrypted_key: str | None = None
    encrypted_signature: str | None = None
    encrypted_xml_name: str | None = None
    encrypted_media: list[str] = field(default_factory=list)


_LOCAL_NAMES: dict[str, str] = {}


def local(tag: Any) -> str:
    """Return the local name of an element tag (``{ns}name`` -> ``name``)."""
    name = _LOCAL_NAMES.get(tag)
    if name is None:
        if not isinstance(tag, str):
            return ""
        name = tag.rpartition("}")[2]
        if len(_LOCAL_NAMES) < 10_000:  # a form's tags repeat from record to record
            _LOCAL_NAMES[tag] = name
    return name


def parse_xml(data: bytes) -> etree._Element:
    """Parse untrusted XML bytes; raise a 400 problem saying what is wrong."""
    if len(data) > MAX_XML_BYTES:
        raise errors.HostileInput(
            reason=_("the XML is larger than %(limit)s bytes", limit=MAX_XML_BYTES)
        )
    try:
        root = safexml.parse(data, remove_comments=True, remove_pis=True, collect_ids=False)
    except safexml.UnsafeXml:
        raise errors.HostileInput(
            reason=_("XML with a DOCTYPE or ENTITY declaration is refused")
        ) from None
    except safexml.MalformedXml as exc:
        raise errors.Unparseable(format="XML", reason=str(exc)) from None
    _check_shape(root)
    return root


# Both bounds are checked by libxml2's XPath engine, in C: a Python walk of every element cost
# more than the rest of parsing a record.
_TOO_DEEP = etree.XPath("boolean(" + "/*" * (MAX_DEPTH + 1) + ")")
_COUNT = etree.XPath("count(//*)")


def _check_shape(root: etree._Element) -> None:
    """Refuse documents too deep or too large to be a form's record."""
    if _TOO_DEEP(root):
        raise errors.HostileInput(
            reason=_("the XML is nested deeper than %(limit)s levels", limit=MAX_DEPTH)
        )
    if _COUNT(root) > MAX_ELEMENTS:
        raise errors.HostileInput(
            reason=_("the XML has more than %(limit)s elements", limit=MAX_ELEMENTS)
        )


def _child(element: etree._Element, name: str) -> etree._Element | None:
    for child in element:
        if local(child.tag) == name:
            return child
    return None


def _text(element: etree._Element | None) -> str | None:
    if element is None:
        return None
    text = (element.text or "").strip()
    return text or None


def read_submission(data: bytes) -> ParsedSubmission:
    """Parse a submission and read its identity (openrosa.md §4.4 and §6)."""
    root = parse_xml(data)
    try:
        text = safexml.utf8_text(data, root)
    except safexml.NotUtf8 as exc:
        raise errors.Unparseable(
            format="XML",
            reason=_(
                "a record must be encoded in UTF-8, as ODK Collect writes it (this one is "
                "%(encoding)s)",
                encoding=str(exc),
            ),
        ) from None
    form_id = root.get("id")
    if not form_id:
        raise errors.UnexpectedValue(
            field="id", reason=_("the root element of the record has no id attribute (formID)")
        )
    version = root.get("version")
    if version is None:
        version = root.get("{http://openrosa.org/xforms}version", "")
    meta = _child(root, "meta")
    instance_id = _text(_child(meta, "instanceID")) if meta is not None else None
    if instance_id is None:
        # Some clients put instanceID at the root (Central accepts it there too).
        instance_id = _text(_child(root, "instanceID"))
    deprecated_id = _text(_child(meta, "deprecatedID")) if meta is not None else None
    instance_name = _text(_child(meta, "instanceName")) if meta is not None else None
    parsed = ParsedSubmission(
        root=root,
        text=text,
        form_id=form_id,
        version=version,
        instance_id=instance_id,
        deprecated_id=deprecated_id,
        instance_name=instance_name,
    )
    if root.get("encrypted", "").lower() == "yes" or _namespace(root.tag) in ENCRYPTED_NAMESPACES:
        _read_envelope(root, parsed)
    return parsed


def _read_envelope(root: etree._Element, parsed: ParsedSubmission) -> None:
    """Read the plaintext manifest of an encrypted record (openrosa.md §6)."""
    parsed.encrypted = True
    parsed.encrypted_key = _text(_child(root, "base64EncryptedKey"))
    parsed.encrypted_signature = _text(_child(root, "base64EncryptedElementSignature"))
    parsed.encrypted_xml_name = _text(_child(root, "encryptedXmlFile"))
    parsed.encrypted_media = [
        name
        for media in root
        if local(media.tag) == "media"
        for file in media
        if local(file.tag) == "file"
        if (name := _text(file))
    ]
    if not parsed.encrypted_key or not parsed.encrypted_xml_name:
        raise errors.UnexpectedValue(
            field="encrypted record",
            reason=_("base64EncryptedKey and encryptedXmlFile are required"),
        )
    if not parsed.instance_id:
        raise errors.UnexpectedValue(
            field="instanceID", reason=_("an encrypted record must carry meta/instanceID")
        )


# ---- a record is the form's instance, never a page a browser runs (issue 16) ----------------

# Collect names the root of an encrypted record's manifest so, whatever the form's root.
ENVELOPE_ROOT = "data"
# Elements of these namespaces are rendered and run by browsers (an XHTML or SVG <script>, a
# MathML link, an XSLT program). Records from Collect, Enketo and Web Forms never hold one.
ACTIVE_NAMESPACES = (
    "http://www.w3.org/1999/xhtml",
    "http://www.w3.org/2000/svg",
    "http://www.w3.org/1998/Math/MathML",
    "http://www.w3.org/1999/XSL/Transform",
)
# Evaluated by libxml2, in C, as the shape bounds are.
_ACTIVE_ELEMENT = etree.XPath(
    "(//*[" + " or ".join(f"namespace-uri()='{ns}'" for ns in ACTIVE_NAMESPACES) + "])[1]"
)
# A processing instruction asking the browser to apply a style sheet (XSLT can write a page).
# The parser drops processing instructions, so the bytes are searched: they are what is served.
_STYLE_SHEET = re.compile(rb"<\?xml-stylesheet", re.IGNORECASE)


def _namespace(tag: Any) -> str:
    return tag[1:].partition("}")[0] if isinstance(tag, str) and tag.startswith("{") else ""


def check_instance(parsed: ParsedSubmission, data: bytes, form_root: str) -> None:
    """Refuse what is not a record of the form (a web page sent in its place, say).

    A record is the form's primary instance as the client writes it: its root element has the
    name of the instance's root (``data`` unless the settings sheet names the form) in no
    namespace or the XForms one (ODK Web Forms write it). An encrypted record's manifest is
    Collect's ``<data>`` in the encryption namespace (openrosa.md §6). No element may belong
    to a namespace browsers run, and no style sheet may be asked for: the record's XML is
    served as received. ``data`` is the record's bytes, ``form_root`` the root element's name
    in the form version's field schema. Raises :class:`~server.errors.NotAFormRecord` (400.8).
    """
    root = parsed.root
    name, namespace = local(root.tag), _namespace(root.tag)
    names, namespaces = {form_root}, {"", XFORMS}
    if parsed.encrypted:
        names, namespaces = {ENVELOPE_ROOT, form_root}, {"", XFORMS, *ENCRYPTED_NAMESPACES}
    if name not in names or namespace not in namespaces:
        found = f'<{name} xmlns="{namespace}">' if namespace else f"<{name}>"
        reason = _(
            "its root element is %(found)s, where the form's records have <%(expected)s>.",
            found=found[:200],
            expected=form_root,
        )
        raise errors.NotAFormRecord(form_id=parsed.form_id, reason=reason)
    active = _ACTIVE_ELEMENT(root)
    if active:
        reason = _(
            "it holds a <%(name)s> element of %(namespace)s, which a web browser would run; "
            "a record holds only the form's answers.",
            name=local(active[0].tag)[:100],
            namespace=_namespace(active[0].tag),
        )
        raise errors.NotAFormRecord(form_id=parsed.form_id, reason=reason)
    if _STYLE_SHEET.search(data):
        reason = _(
            "it asks for a style sheet (xml-stylesheet), which a web browser would apply; a "
            "record holds only the form's answers."
        )
        raise errors.NotAFormRecord(form_id=parsed.form_id, reason=reason)


def as_edit(data: bytes, *, instance_id: str, deprecated_id: str) -> bytes:
    """Return a record's XML made an edit: a new ``instanceID``, ``deprecatedID`` the old one.

    What ODK Collect writes when a record is edited on the tablet (openrosa.md §4.4): the same
    answers, ``meta/instanceID`` new and ``meta/deprecatedID`` naming the version it replaces.
    Used to take a conflicting payload (same instanceID, other answers) as an edit of its
    record. Comments and processing instructions are not kept (intake never stores them).
    """
    root = parse_xml(data)
    meta = _child(root, "meta")
    if meta is None:
        namespace = _namespace(root.tag)
        meta = etree.Element(f"{{{namespace}}}meta" if namespace else "meta")
        root.insert(0, meta)
    prefix = meta.tag[: -len(local(meta.tag))]
    for name, value in (("instanceID", instance_id), ("deprecatedID", deprecated_id)):
        element = _child(meta, name)
        if element is None:
            element = etree.SubElement(meta, prefix + name)
        for child in list(element):
            element.remove(child)
        element.text = value
    at_root = _child(root, "instanceID")  # some clients write it there; only one may remain
    if at_root is not None:
        root.remove(at_root)
    return etree.tostring(root, encoding="utf-8", xml_declaration=False)


def build_document(root: etree._Element, repeat_paths: frozenset[str]) -> dict[str, Any]:
    """Return the record as nested dicts and lists (repeats always lists)."""
    root_path = "/" + local(root.tag)
    document = _element_dict(root, root_path, repeat_paths)
    # Repeats with no instance in this record still get an empty list, so that readers never
    # have to tell "absent" from "zero instances".
    for path in repeat_paths:
        parts = path.split("/")[2:]
        if not parts:
            continue
        container: Any = document
        for part in parts[:-1]:
            container = container.get(part) if isinstance(container, dict) else None
            if not isinstance(container, dict):
                break
        else:
            if isinstance(container, dict):
                container.setdefault(parts[-1], [])
    return document


def _element_dict(element: etree._Element, path: str, repeats: frozenset[str]) -> dict:
    result: dict[str, Any] = {}
    for child in element:
        name = local(child.tag)
        if not name:
            continue
        child_path = f"{path}/{name}"
        if len(child):
            value: Any = _element_dict(child, child_path, repeats)
        else:
            text = child.text
            value = text if text else None
        if child_path in repeats:
            if not len(child) and value is None:
                value = {}
            result.setdefault(name, []).append(value)
        elif name not in result:
            result[name] = value
    return result
