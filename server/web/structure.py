"""A form's structure and a record's answers, arranged for reading in the console.

Both come from the field schema (:mod:`server.forms.schema`): questions, groups and repeats in
document order, with their labels in each of the form's languages. Nothing here reads the
database; the pages pass the schema and the record's document in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask_babel import lazy_gettext

from server.forms.schema import Field, FormSchema
from server.web.labels import pick

# A reference to another answer in a label, as the schema writes XForm outputs: ``${name}``,
# or ``${../name}`` for a sibling inside a repeat (pyxform writes those relative).
_REFERENCE = re.compile(r"\$\{(?:\.\./)*([A-Za-z_][\w.-]*)\}")

_TYPES = {
    "string": lazy_gettext("text"),
    "int": lazy_gettext("integer"),
    "decimal": lazy_gettext("decimal"),
    "date": lazy_gettext("date"),
    "time": lazy_gettext("time"),
    "dateTime": lazy_gettext("date and time"),
    "geopoint": lazy_gettext("location"),
    "geotrace": lazy_gettext("line"),
    "geoshape": lazy_gettext("area"),
    "select_one": lazy_gettext("select one"),
    "select_multiple": lazy_gettext("select multiple"),
    "rank": lazy_gettext("rank"),
    "barcode": lazy_gettext("barcode"),
    "boolean": lazy_gettext("yes/no"),
    "group": lazy_gettext("group"),
    "repeat": lazy_gettext("repeat"),
}
_MEDIA = {
    "image": lazy_gettext("photo"),
    "audio": lazy_gettext("audio"),
    "video": lazy_gettext("video"),
}


def media_kind(mediatype: str | None, filename: str = "") -> str:
    """Return image, audio, video or file for an upload question or an attachment name."""
    family = (mediatype or "").split("/", 1)[0]
    if family in ("image", "audio", "video"):
        return family
    lowered = filename.lower()
    if lowered.endswith((".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")):
        return "image"
    if lowered.endswith((".mp3", ".m4a", ".amr", ".ogg", ".oga", ".wav", ".aac", ".3gp", ".opus")):
        return "audio"
    if lowered.endswith((".mp4", ".webm", ".mov", ".3gpp")):
        return "video"
    return "file"


def type_label(entry: Field) -> str:
    """Return a question's type in plain words (translated)."""
    kind = entry.type
    if kind == "binary":
        if entry.audit:
            return str(lazy_gettext("audit log"))
        return str(_MEDIA.get(media_kind(entry.mediatype), lazy_gettext("file")))
    if entry.is_question and entry.control is None and entry.calculate:
        return str(lazy_gettext("calculation"))
    if entry.control == "trigger" or (
        entry.readonly and entry.control == "input" and kind == "string"
    ):
        return str(lazy_gettext("note"))
    return str(_TYPES.get(kind, kind))


@dataclass
class StructureRow:
    """One line of a form's structure: a question, a group or a repeat."""

    depth: int
    kind: str
    name: str
    type: str
    labels: list[str]  # one per language, in the form's order
    required: bool
    relevant: str | None
    choices: list[tuple[str, list[str]]] = field(default_factory=list)
    choice_list: str | None = None  # the key of its choice list in the schema


def structure(
    schema: FormSchema | Mapping[str, Any] | None,
) -> tuple[list[str], list[StructureRow]]:
    """Return the form's languages and its questions, groups and repeats, meta left out."""
    schema = FormSchema.of(schema)
    languages = list(schema.languages) or ["default"]
    rows = []

    def walk(parent: str | None, depth: int) -> None:
        for entry in schema.children(parent):
            if entry.is_meta:
                continue
            choices = [
                (c.name, [pick(c.labels, lang) for lang in languages])
                for c in schema.choices(entry)
            ]
            rows.append(
                StructureRow(
                    depth=depth,
                    kind=entry.kind,
                    name=entry.name,
                    type=type_label(entry),
                    labels=[entry.labels.get(lang, "") for lang in languages],
                    required=entry.required,
                    relevant=entry.relevant,
                    choices=choices,
                    choice_list=entry.choices if choices else None,
                )
            )
            walk(entry.path, depth + 1)

    walk(None, 0)
    return languages, rows


# ---- a record's answers ----------------------------------------------------------------------


@dataclass
class Answer:
    """One line of a record's page: a group or repeat heading, or a question and its answer."""

    depth: int
    kind: str  # "group", "repeat" (one instance), "field"
    label: str
    name: str
    value: str = ""
    raw: str | None = None  # the stored value when the shown one is a label
    media: dict[str, Any] | None = None  # {name, kind, url, present}
    hidden: bool = False  # personal data the reader sees as a pseudonym (or not at all)
    key: str = ""  # where it is in the record: ``/members[2]/age`` (repeats numbered from 1)


def answers(
    schema: FormSchema | Mapping[str, Any] | None,
    document: Mapping[str, Any] | None,
    language: str | None,
    media_url: Callable[[str], str],
    present: set[str],
    hidden: Callable[[str], bool] = lambda _path: False,
) -> list[Answer]:
    """Return a record's answers in form order, labelled in ``language``.

    ``media_url`` gives the console's address of an attachment by name; ``present`` names
    the attachments that have arrived. ``document`` is what the reader may see
    (:mod:`server.personal`); ``hidden`` tells which answers it holds as pseudonyms.
    """
    schema = FormSchema.of(schema)
    out: list[Answer] = []

    def children(parent: str | None) -> list[Field]:
        return [entry for entry in schema.children(parent) if not entry.is_meta]

    def scope_of(parent: str | None, container: Any) -> dict[str, str]:
        # The answers a label inside ``container`` may name: its fields and those of its
        # groups, not those of repeats within it (each instance is a scope of its own).
        found: dict[str, str] = {}

        def collect(parent: str | None, container: Any) -> None:
            if not isinstance(container, Mapping):
                return
            for entry in children(parent):
                value = container.get(entry.name)
                if entry.is_group:
                    collect(entry.path, value)
                elif not entry.is_repeat and isinstance(value, str | int | float):
                    found.setdefault(entry.name, str(value))

        collect(parent, container)
        return found

    def label_of(entry: Field, scopes: tuple[dict[str, str], ...]) -> str:
        # As ODK Collect shows it: each ``${name}`` replaced by that answer, looked up from the
        # innermost repeat instance outwards; one never answered shows as nothing.
        label = pick(entry.labels, language, entry.name)
        return _REFERENCE.sub(
            lambda m: next((scope[m[1]] for scope in reversed(scopes) if m[1] in scope), ""),
            label,
        )

    def value_of(entry: Field, raw: Any, label: str) -> Answer:
        answer = Answer(0, "field", label, entry.name)
        if hidden(entry.path):
            answer.hidden = True
            answer.value = "" if raw is None else str(raw)
            return answer
        if raw is None or raw == "":
            return answer
        text = str(raw)
        if entry.is_select:
            choices = schema.choice_labels(entry)
            answer.value = ", ".join(pick(choices.get(c), language, c) for c in entry.chosen(text))
            answer.raw = text
        elif entry.type == "binary":
            answer.value = text
            answer.media = {
                "name": text,
                "kind": media_kind(entry.mediatype, text),
                "url": media_url(text),
                "present": text in present,
            }
        elif entry.type == "geopoint":
            parts = text.split()
            answer.value = ", ".join(parts[:2]) + (f" (± {parts[3]} m)" if len(parts) > 3 else "")
            answer.raw = text
        else:
            answer.value = text
        return answer

    def walk(
        parent: str | None,
        container: Any,
        depth: int,
        scopes: tuple[dict[str, str], ...],
        at: str = "",
    ) -> None:
        for entry in children(parent):
            value = container.get(entry.name) if isinstance(container, Mapping) else None
            if entry.is_repeat:
                instances = value if isinstance(value, list) else ([value] if value else [])
                for number, instance in enumerate(instances, 1):
                    inner = (*scopes, scope_of(entry.path, instance))
                    key = f"{at}/{entry.name}[{number}]"
                    label = f"{label_of(entry, inner)} #{number}"
                    out.append(Answer(depth, "repeat", label, entry.name, key=key))
                    walk(entry.path, instance, depth + 1, inner, key)
            elif entry.is_group:
                key = f"{at}/{entry.name}"
                out.append(Answer(depth, "group", label_of(entry, scopes), entry.name, key=key))
                walk(entry.path, value, depth + 1, scopes, key)
            else:
                answer = value_of(entry, value, label_of(entry, scopes))
                answer.depth = depth
                answer.key = f"{at}/{entry.name}"
                out.append(answer)

    walk(None, document or {}, 0, (scope_of(None, document),))
    return out


@dataclass
class Pair:
    """One line of two records side by side: the same place in each (None where one lacks it)."""

    first: Answer | None
    second: Answer | None

    @property
    def shown(self) -> Answer:
        """The answer whose label and depth the line shows."""
        found = self.first or self.second
        assert found is not None
        return found

    @property
    def differs(self) -> bool:
        """Tell whether the two answers differ (a heading differs when one side lacks it)."""
        if self.first is None or self.second is None:
            return True
        return (self.first.raw or self.first.value) != (self.second.raw or self.second.value)


def side_by_side(first: list[Answer], second: list[Answer]) -> list[Pair]:
    """Pair two records' answers by their place, in the first's order.

    What only the second holds (a repeat instance more, a question of a newer form version)
    comes right after the line that precedes it in the second.
    """
    theirs = {answer.key: answer for answer in second}
    pairs = [Pair(answer, theirs.get(answer.key)) for answer in first]
    placed = {answer.key: index for index, answer in enumerate(first)}
    inserted: list[tuple[int, int, Pair]] = []  # (after line, order, pair)
    after = -1
    for order, answer in enumerate(second):
        if answer.key in placed:
            after = placed[answer.key]
            continue
        inserted.append((after, order, Pair(None, answer)))
    for after, _order, pair in sorted(inserted, key=lambda item: (item[0], item[1]), reverse=True):
        pairs.insert(after + 1, pair)
    return pairs
