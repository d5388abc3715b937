"""A client that talks to the server the way ODK Collect does (openrosa.md), over real HTTP.

It lists forms, downloads what changed (checking every md5 as Collect compares them), fills a
record from the form's own primary instance, and sends it with a HEAD preflight and a POST
split at the size the server advertises — the same requests, headers and multipart shape.
"""

from __future__ import annotations

import copy
import hashlib
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from lxml import etree

XFORMS = "http://www.w3.org/2002/xforms"
LIST_NS = "http://openrosa.org/xforms/xformsList"
MANIFEST_NS = "http://openrosa.org/xforms/xformsManifest"
JR_TEMPLATE = "{http://openrosa.org/javarosa}template"
DEFAULT_SPLIT = 10_000_000


class DownloadFailed(Exception):
    """A form, manifest or media download answered other than 200 (Collect gives up on it)."""


@dataclass
class DownloadedForm:
    """A form as a tablet holds it: its XML bytes, md5 and media."""

    form_id: str
    version: str
    xml: bytes
    md5: str
    media: dict[str, bytes] = field(default_factory=dict)


class CollectClient:
    """One tablet: a server URL (with its token) and Collect's habits."""

    def __init__(
        self,
        server_url: str,
        *,
        device_id: str | None = None,
        session: requests.Session | None = None,
        timeout: float = 60,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        # Collect's read and write timeouts are 60 s; a simulation may shorten its clock.
        self.timeout = timeout
        self.device_id = device_id or f"collect:{uuid.uuid4().hex[:16]}"
        self.http = session or requests.Session()
        self.http.headers.update(
            {
                "X-OpenRosa-Version": "1.0",
                "User-Agent": "org.odk.collect.android/v2024.3.5 Dalvik/2.1.0 (Linux; Android 11)",
            }
        )
        self.forms: dict[str, DownloadedForm] = {}

    def _get(self, url: str) -> requests.Response:
        return self.http.get(url, params={"deviceID": self.device_id}, timeout=self.timeout)

    def _download(self, url: str) -> bytes:
        response = self._get(url)
        if response.status_code != 200:
            raise DownloadFailed(f"{url}: {response.status_code}")
        return response.content

    def form_list(self) -> list[dict[str, str]]:
        """GET formList and parse it as Collect does (formID, name, downloadUrl required)."""
        response = self._get(f"{self.server_url}/formList")
        response.raise_for_status()
        assert "text/xml" in response.headers["Content-Type"], response.headers
        assert response.headers["X-OpenRosa-Version"] == "1.0"
        root = etree.fromstring(response.content)
        entries = []
        for xform in root.findall(f"{{{LIST_NS}}}xform"):
            entry = {child.tag.split("}")[1]: (child.text or "") for child in xform}
            assert entry.get("formID") and entry.get("name") and entry.get("downloadUrl")
            entries.append(entry)
        return entries

    def update_forms(self) -> list[str]:
        """Download every listed form whose md5 differs from the local copy, and its media."""
        changed = []
        for entry in self.form_list():
            expected = entry["hash"].removeprefix("md5:")
            local = self.forms.get(entry["formID"])
            if local is not None and local.md5 == expected:
                continue
            xml = self._download(entry["downloadUrl"])
            md5 = hashlib.md5(xml).hexdigest()
            if md5 != expected:
                raise AssertionError(f"form list hash {expected} != md5 of bytes served {md5}")
            form = DownloadedForm(entry["formID"], entry.get("version", ""), xml, md5)
            if entry.get("manifestUrl"):
                form.media = self._media(entry["manifestUrl"])
            self.forms[form.form_id] = form
            changed.append(form.form_id)
        return changed

    def _media(self, manifest_url: str) -> dict[str, bytes]:
        response = self._get(manifest_url)
        if response.status_code != 200:
            raise DownloadFailed(f"manifest: {response.status_code}")
        assert "text/xml" in response.headers["Content-Type"]
        assert response.headers["X-OpenRosa-Version"] == "1.0"
        media = {}
        for item in etree.fromstring(response.content).findall(f"{{{MANIFEST_NS}}}mediaFile"):
            name = item.findtext(f"{{{MANIFEST_NS}}}filename")
            expected = item.findtext(f"{{{MANIFEST_NS}}}hash")[4:]  # Collect drops "md5:"
            content = self._download(item.findtext(f"{{{MANIFEST_NS}}}downloadUrl"))
            if hashlib.md5(content).hexdigest() != expected:
                raise AssertionError(f"manifest hash of {name} does not match its bytes")
            media[name] = content
        return media

    def new_record(
        self,
        form_id: str,
        values: dict[str, str],
        *,
        instance_id: str | None = None,
        deprecated_id: str | None = None,
    ) -> bytes:
        """Fill the form's primary instance with ``values`` (paths below the root)."""
        xform = etree.fromstring(self.forms[form_id].xml)
        instance = xform.find(f".//{{{XFORMS}}}model/{{{XFORMS}}}instance")
        root = copy.deepcopy(instance[0])
        for element in list(root.iter()):
            if element.get(JR_TEMPLATE) is not None:
                element.getparent().remove(element)
        for path, value in values.items():
            target = root
            for part in path.split("/"):
                found = target.find(f"{{{XFORMS}}}{part}")
                if found is None:
                    found = etree.SubElement(target, f"{{{XFORMS}}}{part}")
                target = found
            target.text = value
        meta = root.find(f"{{{XFORMS}}}meta")
        if meta is None:
            meta = etree.SubElement(root, f"{{{XFORMS}}}meta")
        iid = meta.find(f"{{{XFORMS}}}instanceID")
        if iid is None:
            iid = etree.SubElement(meta, f"{{{XFORMS}}}instanceID")
        iid.text = instance_id or f"uuid:{uuid.uuid4()}"
        if deprecated_id:
            etree.SubElement(meta, f"{{{XFORMS}}}deprecatedID").text = deprecated_id
        etree.cleanup_namespaces(root)
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    def preflight(self) -> tuple[int, int]:
        """HEAD /submission; return (status, split size Collect would use)."""
        response = self.http.head(
            f"{self.server_url}/submission",
            params={"deviceID": self.device_id},
            timeout=self.timeout,
        )
        if response.status_code != 204:
            return response.status_code, DEFAULT_SPLIT
        location = response.headers.get("Location")
        if location:
            assert urlsplit(location).hostname == urlsplit(self.server_url).hostname
        return 204, int(response.headers.get("X-OpenRosa-Accept-Content-Length", DEFAULT_SPLIT))

    def plan(self, xml: bytes, files: dict[str, bytes], split: int) -> list[dict[str, bytes]]:
        """Split files into POSTs as Collect does: XML in each, files until the limit."""
        parts: list[dict[str, bytes]] = []
        current: dict[str, bytes] = {}
        size = len(xml)
        for name, content in files.items():
            if current and (size + len(content) > split or len(current) >= 100):
                parts.append(current)
                current, size = {}, len(xml)
            current[name] = content
            size += len(content)
        parts.append(current)
        return parts

    def post(
        self,
        xml: bytes,
        files: dict[str, bytes],
        *,
        incomplete: bool = False,
        xml_name: str = "record.xml",
    ) -> requests.Response:
        """POST one part: the XML, some files, and ``*isIncomplete*`` unless it is the last."""
        multipart = [("xml_submission_file", (xml_name, xml, "text/xml"))]
        for name, content in files.items():
            kind = "image/jpeg" if name.endswith(".jpg") else "application/octet-stream"
            multipart.append((name, (name, content, kind)))
        if incomplete:
            multipart.append(("*isIncomplete*", (None, b"yes")))
        return self.http.post(
            f"{self.server_url}/submission",
            params={"deviceID": self.device_id},
            files=multipart,
            timeout=self.timeout,
        )

    def send(self, xml: bytes, files: dict[str, bytes]) -> list[requests.Response]:
        """Send a record as Collect does: HEAD, then the planned POSTs, stopping at a failure."""
        status, split = self.preflight()
        assert status == 204, status
        answers = []
        parts = self.plan(xml, files, split)
        for index, part in enumerate(parts):
            response = self.post(xml, part, incomplete=index < len(parts) - 1)
            answers.append(response)
            if response.status_code not in (201, 202):
                break
        return answers
