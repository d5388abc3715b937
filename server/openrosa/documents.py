"""The XML documents of the OpenRosa protocol: form list, manifest, OpenRosaResponse.

Built with lxml so that every value is escaped; namespaces exactly as ODK Collect's parser
wants them (openrosa.md §2, §3, §4.3).
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

XFORMS_LIST = "http://openrosa.org/xforms/xformsList"
MANIFEST = "http://openrosa.org/xforms/xformsManifest"
RESPONSE = "http://openrosa.org/http/response"


@dataclass(frozen=True)
class FormListEntry:
    """One ``<xform>`` of the form list."""

    form_id: str
    name: str
    version: str
    md5: str
    download_url: str
    manifest_url: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class MediaEntry:
    """One ``<mediaFile>`` of a manifest."""

    filename: str
    md5: str
    download_url: str
    # "entityList" / "approvalEntityList": Collect keeps the file as an entity list.
    type: str | None = None
    # Where Collect checks that the entities it created offline still exist (lists only).
    integrity_url: str | None = None


def _serialise(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _add(parent: etree._Element, ns: str, name: str, text: str) -> None:
    etree.SubElement(parent, f"{{{ns}}}{name}").text = text


def form_list(entries: list[FormListEntry], *, verbose: bool = False) -> bytes:
    """Return a form list document. ``hash`` always carries the ``md5:`` prefix Collect needs."""
    root = etree.Element(f"{{{XFORMS_LIST}}}xforms", nsmap={None: XFORMS_LIST})
    for entry in entries:
        xform = etree.SubElement(root, f"{{{XFORMS_LIST}}}xform")
        _add(xform, XFORMS_LIST, "formID", entry.form_id)
        _add(xform, XFORMS_LIST, "name", entry.name)
        _add(xform, XFORMS_LIST, "version", entry.version)
        _add(xform, XFORMS_LIST, "hash", f"md5:{entry.md5}")
        if verbose and entry.description:
            _add(xform, XFORMS_LIST, "descriptionText", entry.description)
        _add(xform, XFORMS_LIST, "downloadUrl", entry.download_url)
        if entry.manifest_url:
            _add(xform, XFORMS_LIST, "manifestUrl", entry.manifest_url)
    return _serialise(root)


def manifest(entries: list[MediaEntry]) -> bytes:
    """Return a manifest document listing a form's media files."""
    root = etree.Element(f"{{{MANIFEST}}}manifest", nsmap={None: MANIFEST})
    for entry in entries:
        media = etree.SubElement(root, f"{{{MANIFEST}}}mediaFile")
        if entry.type:
            media.set("type", entry.type)
        _add(media, MANIFEST, "filename", entry.filename)
        _add(media, MANIFEST, "hash", f"md5:{entry.md5}")
        _add(media, MANIFEST, "downloadUrl", entry.download_url)
        if entry.integrity_url:
            _add(media, MANIFEST, "integrityUrl", entry.integrity_url)
    return _serialise(root)


def entity_states(states: list[tuple[str, bool]]) -> bytes:
    """Return the answer to Collect's integrity check: which entities are deleted."""
    root = etree.Element("data")
    listed = etree.SubElement(root, "entities")
    for uuid, deleted in states:
        entity = etree.SubElement(listed, "entity", id=uuid)
        etree.SubElement(entity, "deleted").text = "true" if deleted else "false"
    return _serialise(root)


def response(message: str, *, nature: str = "submit_success") -> bytes:
    """Return an OpenRosaResponse whose message Collect shows to the enumerator."""
    root = etree.Element(f"{{{RESPONSE}}}OpenRosaResponse", nsmap={None: RESPONSE})
    element = etree.SubElement(root, f"{{{RESPONSE}}}message", nature=nature)
    element.text = message
    return _serialise(root)
