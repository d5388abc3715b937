"""ODK's JavaScript form engine (``@getodk/xforms-engine``, the engine of ODK Web Forms) for tests.

``tests/engine/`` is a Node project: ``package.json`` and ``package-lock.json`` pin the engine
and jsdom, ``fill.mjs`` fills XForms generically (its header says how). :func:`install` runs
``npm ci`` from the lock file into a cache folder named after the lock file's hash, once (a
second session, or a machine offline, finds it installed); :func:`fill` runs ``fill.mjs`` on
many forms in one Node process.

Forms of the shared corpus reference media their authors never published (CSV lists, GeoJSON,
images). :func:`stand_in_media` makes a small file of the right kind for each: a CSV or GeoJSON
with the columns the XForm reads (the value, the label, every column a filter or ``pulldata()``
names), each row ``v1``, ``v2``, ``v3`` in every column, so that a cascade whose parent is
answered ``v1`` still offers ``v1``.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "tests" / "engine"
HARNESS = "fill.mjs"
MINIMUM_NODE = (20, 19)
INSTALL_TIMEOUT = 600
FILL_TIMEOUT = 900


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def missing() -> str | None:
    """Why the engine cannot run here (no Node.js or npm, or too old), or None."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "Node.js and npm are not installed: ODK's form engine tests need Node.js 20.19+"
    try:
        found = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"node --version failed: {exc}"
    if _version(found)[:2] < MINIMUM_NODE:
        return f"Node.js {found} is too old: ODK's form engine needs 20.19 or newer"
    return None


def cache_root() -> Path:
    """Where installed engines are kept (``MERIT_TEST_ENGINE_CACHE`` names another folder)."""
    named = os.environ.get("MERIT_TEST_ENGINE_CACHE")
    if named:
        return Path(named)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "merit-collect" / "xforms-engine"


def install(root: Path | None = None) -> Path:
    """Install the locked packages (``npm ci``) once; return the folder that runs the harness."""
    lock = (PROJECT / "package-lock.json").read_bytes()
    manifest = (PROJECT / "package.json").read_bytes()
    digest = hashlib.sha256(manifest + b"\0" + lock).hexdigest()[:16]
    folder = (root or cache_root()) / digest
    folder.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f"{digest}.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # pytest-xdist workers install once between them
        stamp = folder / ".installed"
        if not stamp.is_file():
            (folder / "package.json").write_bytes(manifest)
            (folder / "package-lock.json").write_bytes(lock)
            result = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
            )
            if result.returncode != 0:
                raise RuntimeError(f"npm ci failed in {folder}:\n{result.stdout}\n{result.stderr}")
            stamp.write_text(digest)
        harness = (PROJECT / HARNESS).read_bytes()
        target = folder / HARNESS
        if not target.is_file() or target.read_bytes() != harness:
            target.write_bytes(harness)
    return folder


@dataclass
class Filled:
    """What the engine made of one form (``status`` ``ready`` means it may be sent)."""

    id: str
    status: str
    error: str | None = None
    violations: list[dict[str, Any]] = field(default_factory=list)
    xml: str | None = None
    attachments: dict[str, bytes] = field(default_factory=dict)
    labels: dict[str, dict[str, list[str | None]]] = field(default_factory=dict)
    languages: list[str] = field(default_factory=list)
    answered: int = 0
    unanswered: list[str] = field(default_factory=list)
    ms: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Filled:
        return cls(
            id=data["id"],
            status=data.get("status", "fill-failed"),
            error=data.get("error"),
            violations=data.get("violations") or [],
            xml=data.get("xml"),
            attachments={
                a["name"]: base64.b64decode(a["base64"]) for a in data.get("attachments") or []
            },
            labels=data.get("labels") or {},
            languages=data.get("languages") or [],
            answered=data.get("answered") or 0,
            unanswered=data.get("unanswered") or [],
            ms=data.get("ms") or 0,
        )

    def problem(self) -> str:
        """The engine's own words on why this payload must not be sent."""
        if self.error:
            return f"{self.status}: {self.error}"
        shown = "; ".join(
            f"{v['reference']} ({v['condition']}: {v['message']})" for v in self.violations[:5]
        )
        return f"{self.status}: {shown or 'no payload'}"


def fill(folder: Path, forms: dict[str, tuple[Path, Path | None]]) -> dict[str, Filled]:
    """Fill every form (``id -> (XForm path, media folder)``) in one Node process."""
    jobs = [
        {"id": key, "form": str(xml), "media": str(media) if media else None}
        for key, (xml, media) in forms.items()
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(jobs, handle)
    try:
        result = subprocess.run(
            ["node", HARNESS, "--jobs", handle.name],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=FILL_TIMEOUT,
        )
    finally:
        os.unlink(handle.name)
    filled = {}
    for line in result.stdout.splitlines():
        if line.strip():
            entry = Filled.from_json(json.loads(line))
            filled[entry.id] = entry
    if result.returncode != 0 or len(filled) != len(forms):
        raise RuntimeError(
            f"node {HARNESS} stopped ({result.returncode}) after {len(filled)} of {len(forms)} "
            f"forms:\n{result.stderr[-4000:]}"
        )
    return filled


# ---- media the corpus forms reference but do not ship ------------------------------------------

XF = "http://www.w3.org/2002/xforms"
STAND_IN_ROWS = 3
# A 1x1 JPEG and PNG, a silent WAV header: files that open as what their name says.
JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAAMCAgICAgMCAgIDAwMDBAYEBAQEBAgGBgUGCQgKCgkICQkKDA8MCgsOCwkJ"
    "DRENDg8QEBEQCgwSExIQEw8QEBD/yQALCAABAAEBAREA/8wABgAQEAX/2gAIAQEAAD8A0s8g/9k="
)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
WAV = (
    b"RIFF\x28\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00"
    b"\x80\x3e\x00\x00\x02\x00\x10\x00data\x04\x00\x00\x00\x00\x00\x00\x00"
)
_KEYWORDS = {"and", "or", "div", "mod", "true", "false", "not"}
_NAME = re.compile(r"(?<![\w/$.:'\"-])([A-Za-z_][\w.-]*)(?!\s*\()(?![\w:])")


def _instance_id(xform: etree._Element, filename: str) -> str | None:
    for instance in xform.iter(f"{{{XF}}}instance"):
        src = instance.get("src") or ""
        if src.rsplit("/", 1)[-1] == filename:
            return instance.get("id")
    return None


def _predicate_columns(text: str) -> set[str]:
    """Column names a predicate compares: names that are neither paths, functions nor words."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", " ", text)
    text = re.sub(r"(current\(\))?(/[\w.:-]+)+|\.\./?[\w/.-]*|\$\{[^}]*\}", " ", text)
    return {name for name in _NAME.findall(text) if name not in _KEYWORDS}


def _choice_names(xform: etree._Element, path: str) -> list[str]:
    """The values a select answering ``path`` offers from a list in the form itself, if any."""
    for control in xform.iter(f"{{{XF}}}select1", f"{{{XF}}}select"):
        if control.get("ref") != path:
            continue
        itemset = control.find(f"{{{XF}}}itemset")
        found = re.match(
            r"instance\('([^']+)'\)", (itemset.get("nodeset") or "") if itemset is not None else ""
        )
        for instance in xform.iter(f"{{{XF}}}instance"):
            if found and instance.get("id") == found.group(1) and not instance.get("src"):
                return [name.text or "" for name in instance.iter(f"{{{XF}}}name")]
    return []


def _filter_values(xml: str, xform: etree._Element, instance_id: str) -> dict[str, list[str]]:
    """Columns a filter compares with a select of the form's own choices: those choices."""
    values = {}
    prefix = re.escape(f"instance('{instance_id}')/root/item")
    for predicate in re.findall(prefix + r"\[([^\]]*)\]", xml):
        for column, path in re.findall(r"([A-Za-z_][\w.-]*)\s*=\s*(/[\w/.-]+)", predicate):
            names = _choice_names(xform, path)
            if names:
                values[column] = names
    return values


def _columns(xml: str, xform: etree._Element, instance_id: str) -> list[str]:
    columns = ["name", "label"]
    for itemset in xform.iter(f"{{{XF}}}itemset"):
        if f"instance('{instance_id}')" not in (itemset.get("nodeset") or ""):
            continue
        for child in itemset:
            ref = child.get("ref") or ""
            if re.fullmatch(r"[A-Za-z_][\w.-]*", ref):
                columns.append(ref)
    prefix = re.escape(f"instance('{instance_id}')/root/item")
    for predicate in re.findall(prefix + r"\[([^\]]*)\](/[A-Za-z_][\w.-]*)?", xml):
        columns.extend(sorted(_predicate_columns(predicate[0])))
        if predicate[1]:
            columns.append(predicate[1][1:])
    for args in re.findall(r"pulldata\(\s*'" + re.escape(instance_id) + r"'\s*,([^)]*)\)", xml):
        columns.extend(re.findall(r"'([^']+)'", args)[:2])
    return list(dict.fromkeys(columns))


def stand_in_media(xml: bytes, filename: str) -> bytes:
    """A small file of the kind ``filename`` names, with what the XForm reads from it."""
    suffix = Path(filename).suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        return JPEG
    if suffix == ".png":
        return PNG
    if suffix == ".svg":
        return b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'
    if suffix in (".wav", ".mp3", ".m4a", ".ogg"):
        return WAV
    xform = etree.fromstring(xml)
    text = xml.decode("utf-8")
    instance_id = _instance_id(xform, filename) or Path(filename).stem
    columns = _columns(text, xform, instance_id)
    known = _filter_values(text, xform, instance_id)
    rows = [
        {
            c: (
                f"Option {i}"
                if c in ("label", "title")
                else known[c][(i - 1) % len(known[c])]
                if c in known
                else f"v{i}"
            )
            for c in columns
        }
        for i in range(1, STAND_IN_ROWS + 1)
    ]
    if suffix == ".csv":
        lines = [",".join(columns)] + [",".join(row[c] for c in columns) for row in rows]
        return ("\n".join(lines) + "\n").encode("utf-8")
    if suffix == ".geojson":
        features = [
            {
                "type": "Feature",
                "id": f"v{i}",
                "geometry": {"type": "Point", "coordinates": [-8.0 + i / 100, 12.6 + i / 100]},
                "properties": {
                    "title": f"Option {i}",
                    **{c: row[c] for c in columns if c not in ("id", "geometry", "title")},
                },
            }
            for i, row in enumerate(rows, start=1)
        ]
        return json.dumps({"type": "FeatureCollection", "features": features}).encode("utf-8")
    if suffix == ".xml":
        items = "".join(
            "<item>" + "".join(f"<{c}>{row[c]}</{c}>" for c in columns) + "</item>" for row in rows
        )
        return f"<root>{items}</root>".encode()
    return b"stand-in media file\n"
