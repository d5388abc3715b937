"""The field schema: what a form version asks, read from its XForm (never from the spreadsheet).

Intake validates and parses records with it, exports take their columns from it, the console
shows it. It is computed when a version is stored (and again when a CSV its choices come from
is attached) and kept in ``FormVersion.schema``. This shape is a contract; change it only
together with its readers::

    {
      "formId": str, "version": str ("" when none), "title": str,
      "root": str,                      # root element of the primary instance ("data")
      "languages": [str],               # itext languages in order; [] for one-language forms
      "defaultLanguage": str | None,
      "instanceName": str | None,       # calculate expression of meta/instanceName
      "publicKey": str | None,          # base64RsaPublicKey of encrypted forms
      "submissionUrl": str | None,
      "media": [{"name": str, "type": "image" | "audio" | "video" | "file"}],
      "choiceLists": {key: [{"name": str, "labels": {lang_or_"default": str}}]},
      "fields": [field, ...],           # document order; groups and repeats are entries too
      "entitiesVersion": str | None,    # entities:entities-version of the model
      "entities": [entity, ...]         # the entity blocks (meta/entity), document order
    }

    entity = {
      "dataset": str,                   # the entity list it creates or updates
      "path": "/data/meta/entity",      # the block's element (one per repeat instance)
      "container": "/data",             # where its properties are read (parent of meta)
      "create": bool, "update": bool,   # the actions the form declares (attribute present)
      "properties": [{"path": str, "property": str}]   # fields with entities:saveto
    }

    field = {
      "path": "/data/grp/q", "name": "q",
      "kind": "field" | "group" | "repeat",
      "type": "string" | "int" | "decimal" | "date" | "time" | "dateTime" | "geopoint" |
              "geotrace" | "geoshape" | "binary" | "barcode" | "boolean" | "select_one" |
              "select_multiple" | "rank" | "group" | "repeat" | (any other bind type, bare),
      "control": "input" | "select1" | "select" | "upload" | "rank" | "range" | "trigger" |
                 (another body element's name) | None,   # None: no body control
      "mediatype": str | None,          # of upload controls ("image/*")
      "labels": {lang_or_"default": str},
      "choices": str | None,            # key in choiceLists, for selects
      "parent": str | None,             # enclosing group or repeat; None at the root
      "repeat": str | None,             # nearest enclosing repeat
      "repeats": [str],                 # every enclosing repeat, outermost first
      "required": bool, "readonly": bool,
      "relevant": str | None, "calculate": str | None, "constraint": str | None,
      "preload": str | None, "preloadParams": str | None,
      "pii": bool,                      # marked in the XLSForm's pii column
      "audit": bool                     # meta/audit, the client audit log (binary CSV)
    }

Choice list keys: the list name (the secondary instance's id) for lists written in the form;
``file:<name>`` for lists read from a media file (``select_one_from_file``), whose entries
come from the file when it is known (empty list until then); the field's path for items
written inline in the body. Selects answered from an ``external_choices`` sheet
(``select_one_external``) are ``input`` controls with no choice list; their ``itemsets.csv``
appears in ``media``.

A field with ``entities:saveto`` feeds the entity block of its nearest enclosing container that
has one (pyxform's rule for forms writing to several lists).

Repeats appear once: pyxform writes each repeat twice in the instance (the ``jr:template``
copy and a first instance), and both are merged by path.

Readers do not walk this dict: they read it through :class:`FormSchema` (``FormSchema.of(d)``,
or ``FormVersion.form_schema``), typed fields with the facts intake, the console, the exports
and :mod:`server.personal` ask of them (repeats, binaries, selects, children of a group, the
values a record document holds at a field's path), each written here once.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from lxml import etree

from server.forms import xform
from server.forms.xform import JR, NS, XFORMS

ENTITIES = "http://www.opendatakit.org/xforms/entities"

MEDIA_TYPES = {
    "images": "image",
    "audio": "audio",
    "video": "video",
    "file": "file",
    "file-csv": "file",
}
_MEDIA = re.compile(r"jr://(images|audio|video|file-csv|file)/([^\s\"'<>()]+)")
_ITEXT = re.compile(r"jr:itext\(\s*'([^']*)'\s*\)")
_ITEXT_FIELD = re.compile(r"jr:itext\(\s*([\w.-]+)\s*\)")
_INSTANCE_REF = re.compile(r"instance\(\s*['\"]([^'\"]+)['\"]\s*\)")
_SIMPLE_PATH = re.compile(r"/[\w.-]+(?:/[\w.-]+)*")

MAX_CHOICES_PER_FILE = 200_000


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname


def _elements(parent: etree._Element) -> Iterator[etree._Element]:
    return (child for child in parent if isinstance(child.tag, str))


def _render(element: etree._Element) -> str:
    """Return a label's text, with ``<output value="/data/x"/>`` written ``${x}``."""
    parts = [element.text or ""]
    for child in element:
        if isinstance(child.tag, str) and _local(child) == "output":
            value = (child.get("value") or "").strip()
            if _SIMPLE_PATH.fullmatch(value):
                parts.append("${" + value.rsplit("/", 1)[-1] + "}")
            else:
                parts.append("${" + value + "}")
        elif isinstance(child.tag, str):
            parts.append(_render(child))
        parts.append(child.tail or "")
    return "".join(parts).strip()


class _Translations:
    """The itext block: text ids to their plain text, per language."""

    def __init__(self, model: etree._Element) -> None:
        self.languages: list[str] = []
        self.default: str | None = None
        self.texts: dict[str, dict[str, str]] = {}
        for translation in model.findall("xf:itext/xf:translation", NS):
            lang = translation.get("lang") or "default"
            if lang not in self.texts:
                self.languages.append(lang)
                self.texts[lang] = {}
            if (translation.get("default") or "").strip() in ("true()", "true"):
                self.default = lang
            for text in translation.findall("xf:text", NS):
                for value in text.findall("xf:value", NS):
                    # Plain values only; form="image"/"audio"/"video"/"big-image" are media.
                    if value.get("form") in (None, "", "long", "short"):
                        self.texts[lang].setdefault(text.get("id", ""), _render(value))

    def lookup(self, text_id: str) -> dict[str, str]:
        """Return the text with this id in each language that has it."""
        return {
            lang: texts[text_id]
            for lang, texts in self.texts.items()
            if text_id in texts and texts[text_id] != ""
        }


def _labels(label: etree._Element | None, itext: _Translations) -> dict[str, str]:
    if label is None:
        return {}
    ref = label.get("ref")
    if ref:
        match = _ITEXT.search(ref)
        if match:
            return itext.lookup(match.group(1))
        return {}
    text = _render(label)
    return {"default": text} if text else {}


def _resolve(ref: str, context: str | None) -> str:
    """Make a body reference absolute (pyxform writes absolute ones; hand-written XML may not)."""
    ref = ref.strip()
    if ref.startswith("/") or context is None:
        return ref
    while ref.startswith("../"):
        context = context.rsplit("/", 1)[0]
        ref = ref[3:]
    return f"{context}/{ref}" if ref not in ("", ".") else context


class _Body:
    """What the body says about each path: its control, its label, groups and repeats."""

    def __init__(self, body: etree._Element | None, itext: _Translations) -> None:
        self.controls: dict[str, etree._Element] = {}
        self.group_labels: dict[str, dict[str, str]] = {}
        self.repeats: set[str] = set()
        self.groups: set[str] = set()
        if body is not None:
            self._walk(body, None, itext)

    def _walk(self, element: etree._Element, context: str | None, itext: _Translations) -> None:
        for child in _elements(element):
            name = _local(child)
            if name == "group":
                ref = child.get("ref") or child.get("nodeset")
                path = _resolve(ref, context) if ref else context
                if ref:
                    self.groups.add(path)
                    labels = _labels(child.find("xf:label", NS), itext)
                    if labels:
                        self.group_labels.setdefault(path, labels)
                self._walk(child, path, itext)
            elif name == "repeat":
                path = _resolve(child.get("nodeset") or child.get("ref") or "", context)
                self.repeats.add(path)
                labels = _labels(child.find("xf:label", NS), itext)
                if labels:
                    self.group_labels[path] = labels
                self._walk(child, path, itext)
            elif child.get("ref") is not None and name not in ("label", "hint", "item"):
                self.controls.setdefault(_resolve(child.get("ref"), context), child)


def _instance_paths(data: etree._Element) -> list[tuple[str, bool]]:
    """Return every element path of the primary instance, in document order, merged by path.

    The flag tells whether the element has element children (in any copy of a repeat).
    """
    order: list[str] = []
    has_children: dict[str, bool] = {}

    def walk(element: etree._Element, path: str) -> None:
        for child in _elements(element):
            child_path = f"{path}/{_local(child)}"
            if child_path not in has_children:
                order.append(child_path)
                has_children[child_path] = False
            if any(True for _ in _elements(child)):
                has_children[child_path] = True
            walk(child, child_path)

    walk(data, f"/{_local(data)}")
    return [(path, has_children[path]) for path in order]


def _bool_attr(value: str | None) -> bool:
    return value is not None and value.strip() not in ("", "false()", "false")


def _bare_type(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(":", 1)[1] if ":" in value else value


def _media(root: etree._Element, body: etree._Element | None) -> list[dict[str, str]]:
    found: dict[str, str] = {}
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        for text in (element.text, *element.attrib.values()):
            if text and "jr://" in text:
                for scheme, name in _MEDIA.findall(text):
                    found.setdefault(name, MEDIA_TYPES[scheme])
    # select_one_external: Collect reads these choices from itemsets.csv, which the XForm
    # never names (pyxform builds the file from the external_choices sheet).
    if body is not None and any(
        el.get("query") for el in body.iter(f"{{{XFORMS}}}input") if isinstance(el.tag, str)
    ):
        found.setdefault("itemsets.csv", "file")
    return [{"name": name, "type": kind} for name, kind in found.items()]


class _ItemRefs:
    """Which child of an item holds the value and which the label (from an ``itemset``)."""

    def __init__(self, itemset: etree._Element | None) -> None:
        self.value = "name"
        self.label = "label"
        self.label_itext: str | None = None
        if itemset is None:
            return
        value = itemset.find("xf:value", NS)
        if value is not None and value.get("ref"):
            self.value = value.get("ref").strip()
        label = itemset.find("xf:label", NS)
        if label is not None and label.get("ref"):
            ref = label.get("ref").strip()
            match = _ITEXT_FIELD.fullmatch(ref)
            if match:
                self.label_itext = match.group(1)
            else:
                self.label = ref


def _instance_items(
    instance: etree._Element, refs: _ItemRefs, itext: _Translations
) -> list[dict[str, Any]]:
    items = []
    for item in instance.iter(f"{{{XFORMS}}}item"):
        children = {_local(c): c for c in _elements(item)}
        value = children.get(refs.value)
        if value is None:
            continue
        labels: dict[str, str] = {}
        itext_id = children.get(refs.label_itext or "itextId")
        if itext_id is not None and (itext_id.text or "").strip():
            labels = itext.lookup(itext_id.text.strip())
        elif refs.label in children:
            text = _render(children[refs.label])
            labels = {"default": text} if text else {}
        items.append({"name": (value.text or "").strip(), "labels": labels})
    return items


def _inline_items(control: etree._Element, itext: _Translations) -> list[dict[str, Any]]:
    items = []
    for item in control.findall("xf:item", NS):
        value = item.find("xf:value", NS)
        items.append(
            {
                "name": (value.text or "").strip() if value is not None else "",
                "labels": _labels(item.find("xf:label", NS), itext),
            }
        )
    return items


def _file_items(name: str, content: bytes, refs: _ItemRefs) -> list[dict[str, Any]]:
    """Read the choices of a ``select_one_from_file`` list from its CSV (or XML) file."""
    if name.lower().endswith(".csv"):
        text = content.decode("utf-8-sig", errors="replace")
        reader = csv.DictReader(io.StringIO(text))
        columns = [c.strip() for c in reader.fieldnames or [] if c]
        label_columns = {
            c: ("default" if c == refs.label else c.split("::", 1)[1].strip())
            for c in columns
            if c == refs.label or c.startswith(f"{refs.label}::")
        }
        items = []
        for number, row in enumerate(reader):
            if number >= MAX_CHOICES_PER_FILE:
                break
            row = {(k or "").strip(): (v or "") for k, v in row.items() if isinstance(v, str)}
            value = row.get(refs.value, "").strip()
            if not value:
                continue
            labels = {
                lang: row[column].strip()
                for column, lang in label_columns.items()
                if row.get(column, "").strip()
            }
            items.append({"name": value, "labels": labels})
        return items
    if name.lower().endswith(".xml"):
        try:
            document = xform.parse(content)
        except xform.XFormError:
            return []
        items = []
        for item in document.iter("item"):
            children = {_local(c): c for c in _elements(item)}
            value = children.get(refs.value)
            if value is None:
                continue
            label = children.get(refs.label)
            text = _render(label) if label is not None else ""
            items.append(
                {"name": (value.text or "").strip(), "labels": {"default": text} if text else {}}
            )
            if len(items) >= MAX_CHOICES_PER_FILE:
                break
        return items
    return []


def _file_name(src: str) -> str:
    match = _MEDIA.fullmatch(src.strip())
    return match.group(2) if match else src.strip().rsplit("/", 1)[-1]


def extract(
    xml: str | bytes,
    *,
    pii: Collection[str] = (),
    files: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """Return the field schema of an XForm.

    ``pii`` holds paths marked personal in the XLSForm, absolute (``/data/grp/q``) or below
    the root (``grp/q``). ``files`` maps media file names to their bytes: CSV (and XML) files
    named by ``select_one_from_file`` fill their choice lists. Raises
    :class:`~server.forms.xform.XFormError` when the XML is not an XForm.
    """
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    root = xform.parse(data)
    ident = xform.identity(root)
    model = xform.model(root)
    instance_root = xform.primary_instance(root)
    root_path = f"/{ident.root}"
    itext = _Translations(model)
    body_element = root.find("h:body", NS)
    body = _Body(body_element, itext)
    files = files or {}

    binds: dict[str, etree._Element] = {}
    for bind in model.findall("xf:bind", NS):
        nodeset = (bind.get("nodeset") or "").strip()
        if nodeset:
            binds.setdefault(nodeset, bind)

    # Secondary instances: choice lists written in the form, or files (src=jr://...).
    secondary: dict[str, etree._Element] = {}
    sources: dict[str, str] = {}
    for instance in model.findall("xf:instance", NS)[1:]:
        instance_id = instance.get("id")
        if not instance_id:
            continue
        if instance.get("src"):
            sources[instance_id] = _file_name(instance.get("src"))
        else:
            secondary[instance_id] = instance

    choice_lists: dict[str, list[dict[str, Any]]] = {}
    choices_of: dict[str, str] = {}
    for path, control in body.controls.items():
        if _local(control) not in ("select1", "select", "rank"):
            continue
        itemset = control.find("xf:itemset", NS)
        if itemset is None:
            if control.find("xf:item", NS) is not None:
                choice_lists[path] = _inline_items(control, itext)
                choices_of[path] = path
            continue
        match = _INSTANCE_REF.search(itemset.get("nodeset") or "")
        if match is None:
            continue  # choices from earlier answers (a repeat): no fixed list
        instance_id = match.group(1)
        refs = _ItemRefs(itemset)
        if instance_id in sources:
            name = sources[instance_id]
            key = f"file:{name}"
            if key not in choice_lists:
                content = files.get(name)
                choice_lists[key] = _file_items(name, content, refs) if content else []
        elif instance_id in secondary:
            key = instance_id
            if key not in choice_lists:
                choice_lists[key] = _instance_items(secondary[instance_id], refs, itext)
        else:
            continue
        choices_of[path] = key
    # Lists no select names (pulldata, search): still known by their id.
    for instance_id, instance in secondary.items():
        if instance_id not in choice_lists and instance.find(".//xf:item", NS) is not None:
            choice_lists[instance_id] = _instance_items(instance, _ItemRefs(None), itext)
    for name in sources.values():
        key = f"file:{name}"
        if key not in choice_lists and name.lower().endswith(".csv"):
            content = files.get(name)
            choice_lists[key] = _file_items(name, content, _ItemRefs(None)) if content else []

    pii_set = set(pii)
    fields = []
    for path, has_children in _instance_paths(instance_root):
        fields.append(
            _field(
                path,
                has_children,
                root_path=root_path,
                bind=binds.get(path),
                body=body,
                itext=itext,
                choices=choices_of.get(path),
                pii=path in pii_set or path[len(root_path) + 1 :] in pii_set,
            )
        )

    instance_name_bind = binds.get(f"{root_path}/meta/instanceName")
    submission = model.find("xf:submission", NS)
    languages = [] if itext.languages == ["default"] else list(itext.languages)
    default_language = None
    if languages:
        default_language = itext.default if itext.default in languages else languages[0]
    return {
        "formId": ident.form_id,
        "version": ident.version,
        "title": ident.title,
        "root": ident.root,
        "languages": languages,
        "defaultLanguage": default_language,
        "instanceName": instance_name_bind.get("calculate")
        if instance_name_bind is not None
        else None,
        "publicKey": submission.get("base64RsaPublicKey") if submission is not None else None,
        "submissionUrl": submission.get("action") if submission is not None else None,
        "media": _media(root, body_element),
        "choiceLists": choice_lists,
        "fields": fields,
        "entitiesVersion": model.get(f"{{{ENTITIES}}}entities-version"),
        "entities": _entities(instance_root, binds),
    }


def _entities(data: etree._Element, binds: Mapping[str, etree._Element]) -> list[dict[str, Any]]:
    """Return the entity blocks of the primary instance and the fields saved to each."""
    blocks: dict[str, dict[str, Any]] = {}

    def walk(element: etree._Element, path: str) -> None:
        for child in _elements(element):
            child_path = f"{path}/{_local(child)}"
            if _local(child) == "entity" and _local(element) == "meta" and child.get("dataset"):
                blocks.setdefault(
                    child_path,
                    {
                        "dataset": child.get("dataset"),
                        "path": child_path,
                        "container": child_path.rsplit("/", 2)[0],
                        "create": child.get("create") is not None,
                        "update": child.get("update") is not None,
                        "properties": [],
                    },
                )
                continue
            walk(child, child_path)

    walk(data, f"/{_local(data)}")
    by_container = sorted(blocks.values(), key=lambda b: -len(b["container"]))
    for nodeset, bind in binds.items():
        saveto = bind.get(f"{{{ENTITIES}}}saveto")
        if not saveto:
            continue
        for block in by_container:
            if nodeset.startswith(block["container"] + "/"):
                block["properties"].append({"path": nodeset, "property": saveto.strip()})
                break
    return list(blocks.values())


def entity_lists_used(schema: Mapping[str, Any]) -> list[str]:
    """Return the names of the entity lists a form may read: its ``<name>.csv`` files."""
    return [
        m["name"][:-4]
        for m in schema.get("media", [])
        if m["name"].lower().endswith(".csv") and m["name"] != "itemsets.csv"
    ]


def _field(
    path: str,
    has_children: bool,
    *,
    root_path: str,
    bind: etree._Element | None,
    body: _Body,
    itext: _Translations,
    choices: str | None,
    pii: bool,
) -> dict[str, Any]:
    ancestors = []
    cursor = path.rsplit("/", 1)[0]
    while cursor and cursor != root_path and cursor.startswith(root_path):
        ancestors.append(cursor)
        cursor = cursor.rsplit("/", 1)[0]
    ancestors.reverse()  # outermost first
    repeats = [a for a in ancestors if a in body.repeats]
    control_element = body.controls.get(path)
    if path in body.repeats:
        kind = "repeat"
    elif has_children or path in body.groups:
        kind = "group"
    else:
        kind = "field"

    def attr(name: str) -> str | None:
        return bind.get(name) if bind is not None else None

    control: str | None = None
    mediatype = None
    labels: dict[str, str] = {}
    if kind == "field":
        bare = _bare_type(attr("type")) or "string"
        if control_element is not None:
            control = _local(control_element)
            mediatype = control_element.get("mediatype")
            labels = _labels(control_element.find("xf:label", NS), itext)
        if control == "select1" or bare == "select1":
            field_type = "select_one"
        elif control == "select" or bare == "select":
            field_type = "select_multiple"
        elif control == "rank" or bare == "rank":
            field_type = "rank"
        else:
            field_type = bare
    else:
        field_type = kind
        labels = body.group_labels.get(path, {})
    return {
        "path": path,
        "name": path.rsplit("/", 1)[-1],
        "kind": kind,
        "type": field_type,
        "control": control,
        "mediatype": mediatype,
        "labels": labels,
        "choices": choices if kind == "field" else None,
        "parent": ancestors[-1] if ancestors else None,
        "repeat": repeats[-1] if repeats else None,
        "repeats": repeats,
        "required": _bool_attr(attr("required")),
        "readonly": _bool_attr(attr("readonly")),
        "relevant": attr("relevant"),
        "calculate": attr("calculate"),
        "constraint": attr("constraint"),
        "preload": attr(f"{{{JR}}}preload"),
        "preloadParams": attr(f"{{{JR}}}preloadParams"),
        "pii": pii,
        "audit": path == f"{root_path}/meta/audit",
    }


# ---- the typed view: what every reader of a schema asks of it ----------------------------------

SELECT_TYPES = ("select_one", "select_multiple", "rank")


@dataclass(frozen=True)
class Choice:
    """One choice of a list: its value and its labels by language."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MediaFile:
    """A media file the XForm names (``jr://images/a.png``), by name and kind."""

    name: str
    type: str


@dataclass(frozen=True)
class Field:
    """One node of a form version: a question, a group or a repeat (see the dict above)."""

    path: str
    name: str
    kind: str = "field"
    type: str = "string"
    control: str | None = None
    mediatype: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    choices: str | None = None  # key in FormSchema.choice_lists
    parent: str | None = None
    repeat: str | None = None
    repeats: tuple[str, ...] = ()
    required: bool = False
    readonly: bool = False
    relevant: str | None = None
    calculate: str | None = None
    constraint: str | None = None
    preload: str | None = None
    preload_params: str | None = None
    pii: bool = False
    audit: bool = False

    @cached_property
    def parts(self) -> tuple[str, ...]:
        """The path's steps below the root element (``("grp", "q")`` for ``/data/grp/q``)."""
        return parts_of(self.path)

    @property
    def is_question(self) -> bool:
        return self.kind == "field"

    @property
    def is_group(self) -> bool:
        return self.kind == "group"

    @property
    def is_repeat(self) -> bool:
        return self.kind == "repeat"

    @property
    def is_binary(self) -> bool:
        """A question answered with a file (photo, audio, video, file, the client audit log)."""
        return self.is_question and self.type == "binary"

    @property
    def is_select(self) -> bool:
        """A question answered with choice names (select one, select multiple, rank)."""
        return self.is_question and self.type in SELECT_TYPES

    @property
    def is_meta(self) -> bool:
        """A field of the ``meta`` block (instanceID, instanceName, audit...)."""
        return self.parts[:1] == ("meta",)

    def chosen(self, value: str) -> list[str]:
        """Return the choice names of an answer (select multiple and rank: space-separated)."""
        return [value] if self.type == "select_one" else value.split()

    def values_in(self, document: Any) -> Iterator[Any]:
        """Yield this field's values in a record document (one per repeat instance)."""
        return values_at(document, self.parts)

    def answers_in(self, document: Any) -> Iterator[str]:
        """Yield this field's non-empty text answers in a record document, stripped."""
        for value in values_at(document, self.parts):
            if isinstance(value, str) and value.strip():
                yield value.strip()


def parts_of(path: str) -> tuple[str, ...]:
    """Return an absolute path's steps below the root element."""
    return tuple(path.split("/")[2:])


def values_at(document: Any, parts: Iterable[str]) -> Iterator[Any]:
    """Yield the values at ``parts`` in a record document, through every repeat instance.

    A record document is what :func:`server.submissions.parsing.build_document` makes: nested
    dicts, and a list for each repeat. A step that is missing yields None at the end of the
    path and nothing before it.
    """
    parts = tuple(parts)
    if isinstance(document, list):
        for item in document:
            yield from values_at(item, parts)
        return
    if not parts:
        yield document
        return
    if isinstance(document, dict):
        yield from values_at(document.get(parts[0]), parts[1:])


def _field_of(entry: Mapping[str, Any], root: str) -> Field:
    path = entry.get("path") or ""
    parent = entry.get("parent")
    return Field(
        path=path,
        name=entry.get("name") or path.rsplit("/", 1)[-1],
        kind=entry.get("kind") or "field",
        type=entry.get("type") or "string",
        control=entry.get("control"),
        mediatype=entry.get("mediatype"),
        labels=dict(entry.get("labels") or {}),
        choices=entry.get("choices") or None,
        parent=None if parent == f"/{root}" else parent,  # the root's children: None
        repeat=entry.get("repeat"),
        repeats=tuple(entry.get("repeats") or ()),
        required=bool(entry.get("required")),
        readonly=bool(entry.get("readonly")),
        relevant=entry.get("relevant"),
        calculate=entry.get("calculate"),
        constraint=entry.get("constraint"),
        preload=entry.get("preload"),
        preload_params=entry.get("preloadParams"),
        pii=bool(entry.get("pii")),
        audit=bool(entry.get("audit")),
    )


@dataclass(frozen=True, eq=False)
class FormSchema:
    """A form version's field schema, typed: built once from the stored dict, then only read.

    Its derived facts (repeats, binaries, selects, children...) are computed on first use and
    kept, so a schema cached per version (intake, :mod:`server.personal`) computes them once.
    """

    form_id: str = ""
    version: str = ""
    title: str = ""
    root: str = "data"
    languages: tuple[str, ...] = ()
    default_language: str | None = None
    instance_name: str | None = None
    public_key: str | None = None
    submission_url: str | None = None
    media: tuple[MediaFile, ...] = ()
    choice_lists: Mapping[str, tuple[Choice, ...]] = field(default_factory=dict)
    fields: tuple[Field, ...] = ()
    entities_version: str | None = None
    # The entity blocks (the stored dict's "entities"), as the module docstring shapes them.
    entities: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def of(cls, schema: FormSchema | Mapping[str, Any] | None) -> FormSchema:
        """Return the typed view of a stored schema dict (an empty schema for None)."""
        if isinstance(schema, FormSchema):
            return schema
        schema = schema or {}
        root = schema.get("root") or "data"
        return cls(
            form_id=schema.get("formId") or "",
            version=schema.get("version") or "",
            title=schema.get("title") or "",
            root=root,
            languages=tuple(schema.get("languages") or ()),
            default_language=schema.get("defaultLanguage"),
            instance_name=schema.get("instanceName"),
            public_key=schema.get("publicKey"),
            submission_url=schema.get("submissionUrl"),
            media=tuple(MediaFile(m["name"], m["type"]) for m in schema.get("media") or ()),
            choice_lists={
                key: tuple(
                    Choice(str(item.get("name", "")), dict(item.get("labels") or {}))
                    for item in items
                )
                for key, items in (schema.get("choiceLists") or {}).items()
            },
            fields=tuple(_field_of(f, root) for f in schema.get("fields") or () if f.get("path")),
            entities_version=schema.get("entitiesVersion"),
            entities=tuple(schema.get("entities") or ()),
        )

    @cached_property
    def by_path(self) -> Mapping[str, Field]:
        return {f.path: f for f in self.fields}

    def field(self, path: str) -> Field | None:
        """Return the field at an absolute path (None when the version has none)."""
        return self.by_path.get(path)

    @cached_property
    def questions(self) -> tuple[Field, ...]:
        """Every question (not groups nor repeats), in form order."""
        return tuple(f for f in self.fields if f.is_question)

    @cached_property
    def repeats(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.is_repeat)

    @cached_property
    def repeat_paths(self) -> frozenset[str]:
        return frozenset(f.path for f in self.repeats)

    @cached_property
    def binaries(self) -> tuple[Field, ...]:
        """The questions answered with a file, the client audit log included."""
        return tuple(f for f in self.fields if f.is_binary)

    @cached_property
    def audit_paths(self) -> frozenset[str]:
        """The client audit log's path (``meta/audit``), when the form keeps one."""
        return frozenset(f.path for f in self.fields if f.audit and f.is_question)

    @cached_property
    def selects(self) -> tuple[Field, ...]:
        """The questions answered with choice names, in form order."""
        return tuple(f for f in self.fields if f.is_select)

    @cached_property
    def _children(self) -> Mapping[str | None, tuple[Field, ...]]:
        found: dict[str | None, list[Field]] = {}
        for entry in self.fields:
            found.setdefault(entry.parent, []).append(entry)
        return {parent: tuple(entries) for parent, entries in found.items()}

    def children(self, path: str | None = None) -> tuple[Field, ...]:
        """Return the fields directly inside a group or repeat (None: the root's), in order."""
        return self._children.get(path, ())

    def choices(self, entry: Field) -> tuple[Choice, ...]:
        """Return the choices of a select question (empty when its list is not known)."""
        return self.choice_lists.get(entry.choices or "", ())

    def choice_labels(self, entry: Field) -> Mapping[str, Mapping[str, str]]:
        """Return a select's choice names to their labels."""
        return {c.name: c.labels for c in self.choices(entry)}

    @cached_property
    def pii_paths(self) -> frozenset[str]:
        """The paths of the fields marked personal in the XLSForm's pii column."""
        return frozenset(f.path for f in self.fields if f.pii)

    @cached_property
    def file_choice_files(self) -> tuple[str, ...]:
        """The media files whose content fills a choice list (``file:<name>`` keys)."""
        return tuple(key[5:] for key in self.choice_lists if key.startswith("file:"))
