"""Tables from the form, not from the data: the columns of every export, from the field schemas.

The columns come from the field schema of every published version of the form, merged: a field
takes the place it has in the newest version that has it, and a field removed later keeps its
place after the field it followed when it was last there. A new version therefore never moves a
column, and records filled on an old version keep their answers.

There is a main table (one row per record) and one table per repeat, nested repeats included,
linked as in ODK Central (``lib/data/briefcase.js``): the main row's ``KEY`` is the record's
instanceID; a repeat row's ``KEY`` is the path below the root with 1-based positions
(``uuid:…/household/member[2]``, nested ``uuid:…/member[1]/visit[2]``) and its ``PARENT_KEY`` the
``KEY`` of the row it belongs to. The main table's columns are Central's:

    SubmissionDate, <fields>, KEY, SubmitterID, SubmitterName, AttachmentsPresent,
    AttachmentsExpected, Status, ReviewState, DeviceID, Edits, FormVersion, instanceName

``instanceName`` (the record's display name, also known for encrypted records) is ours, last,
so that tools that read Central's columns by position still find them where Central puts them.

In CSV, a cell that a spreadsheet would run as a formula (a tablet's ``=HYPERLINK(...)``) starts
with a ``'`` unless ``escape_formulas`` is off: every answer that is not a number of a numeric
field, and the metadata the client writes (KEY, SubmitterName, DeviceID, instanceName), go
through :func:`server.exports.values.guard_formula`, decided per column, never per cell.

A *raw row* is what the record source gives for one table row: metadata then every field's
trimmed text, in the table's field order. A :class:`TablePlan` turns raw rows into output
rows with a function generated for it (:mod:`server.exports.compiled`): one
``operator.itemgetter`` (which also repeats a geopoint's text into its four cells), then the
converters of the columns that need typing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

from flask_babel import force_locale, gettext

from server import errors
from server.exports import compiled, values
from server.exports.options import ExportOptions
from server.forms import languages
from server.forms.schema import SELECT_TYPES, Choice, Field, FormSchema
from server.personal import PersonalFields, personal_fields

Target = Literal["csv", "xlsx"]

# Positions of the metadata in a main raw row (the record source fills them in this order).
M_ID, M_INSTANCE_ID, M_DATE, M_SUBMITTER_ID, M_SUBMITTER_NAME, M_REVIEW = range(6)
M_DEVICE, M_EDITS, M_FORM_VERSION, M_INSTANCE_NAME, M_PRESENT, M_EXPECTED = range(6, 12)
M_ENCRYPTED, M_VERSION_ID, M_STATUS = range(12, 15)
META_WIDTH = 15
# Positions in a repeat raw row.
R_KEY, R_PARENT_KEY = 0, 1
REPEAT_META_WIDTH = 2

MAIN_TRAILER = (
    ("KEY", M_INSTANCE_ID),
    ("SubmitterID", M_SUBMITTER_ID),
    ("SubmitterName", M_SUBMITTER_NAME),
    ("AttachmentsPresent", M_PRESENT),
    ("AttachmentsExpected", M_EXPECTED),
    ("Status", M_STATUS),
    ("ReviewState", M_REVIEW),
    ("DeviceID", M_DEVICE),
    ("Edits", M_EDITS),
    ("FormVersion", M_FORM_VERSION),
    ("instanceName", M_INSTANCE_NAME),
)
NOT_DECRYPTED = "not decrypted"


# ---- the merged form ---------------------------------------------------------------------------


@dataclass
class FieldInfo:
    """One node of the merged form: a question, a group or a repeat."""

    path: str
    name: str
    kind: str
    type: str
    parts: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    choices: list[Choice] | None = None
    pii: bool = False
    audit: bool = False
    deleted: bool = False
    repeat: str | None = None  # innermost repeat around it (its table); None: the main table

    @property
    def choice_names(self) -> list[str] | None:
        return None if self.choices is None else [c.name for c in self.choices]


@dataclass
class FormLayout:
    """The union of a form's published versions, in form order."""

    xml_form_id: str
    root: str
    fields: list[FieldInfo]
    languages: list[str]
    default_language: str | None
    versions: dict[str, str]  # form version row id (as text) -> version string

    # What the versions mark personal (server/personal.py): the one definition every export
    # format, OData and the console use.
    personal: PersonalFields = field(default_factory=PersonalFields)

    def __post_init__(self) -> None:
        self.by_path = {f.path: f for f in self.fields}
        self.repeats = [f for f in self.fields if f.kind == "repeat"]

    def leaves(self) -> list[FieldInfo]:
        """Return every question (not groups nor repeats), in form order."""
        return [f for f in self.fields if f.kind == "field"]


def merge(
    xml_form_id: str,
    stored: list[FormSchema | Mapping[str, Any]],
    versions: dict[str, str],
) -> FormLayout:
    """Merge field schemas (oldest first) into one layout; the newest decides types and labels."""
    if not stored:
        return FormLayout(xml_form_id, "data", [], [], None, versions)
    schemas = [FormSchema.of(s) for s in stored]
    newest = schemas[-1]
    personal = personal_fields(schemas)
    order: list[str] = []
    definitions: dict[str, Field] = {}
    for schema in reversed(schemas):
        anchor = -1
        positions = {path: index for index, path in enumerate(order)}
        for definition in schema.fields:
            path = definition.path
            definitions.setdefault(path, definition)
            if path in positions:
                anchor = positions[path]
                continue
            # A field only older versions have goes right after the field it followed there.
            order.insert(anchor + 1, path)
            anchor += 1
            positions = {p: index for index, p in enumerate(order)}
    root = newest.root
    repeat_paths = {p for p in order if definitions[p].is_repeat}
    fields: list[FieldInfo] = []
    for path in order:
        definition = definitions[path]
        enclosing = [r for r in repeat_paths if path.startswith(r + "/")]
        fields.append(
            FieldInfo(
                path=path,
                name=definition.name,
                kind=definition.kind,
                type=definition.type,
                parts=definition.parts,
                labels=definition.labels,
                choices=_choices(schemas, path),
                pii=personal.is_personal(path),
                audit=definition.audit,
                deleted=newest.field(path) is None,
                repeat=max(enclosing, key=len) if enclosing else None,
            )
        )
    return FormLayout(
        xml_form_id=xml_form_id,
        root=root,
        fields=fields,
        languages=list(newest.languages),
        default_language=newest.default_language,
        versions=versions,
        personal=personal,
    )


def _choices(schemas: list[FormSchema], path: str) -> list[Choice] | None:
    """Return the union of a select's choices over every version (newest order first)."""
    merged: list[Choice] = []
    seen: set[str] = set()
    known = False
    for schema in reversed(schemas):
        definition = schema.field(path)
        if definition is None or definition.choices not in schema.choice_lists:
            continue
        known = True
        for item in schema.choices(definition):
            if item.name and item.name not in seen:
                seen.add(item.name)
                merged.append(item)
    return merged if known else None


# ---- labels --------------------------------------------------------------------------------------

_TAGS = re.compile(r"<[^>]*>")


def resolve_language(
    layout: FormLayout, wanted: str | None, *, field: str = "language"
) -> str | None:
    """Return the form's language key a user's choice names ("fr", "French", "French (fr)").

    ``default`` names the form's default language (None for a form in one language).
    """
    if not wanted:
        return layout.default_language
    wanted_lower = wanted.strip().lower()
    if wanted_lower == "default":
        return layout.default_language
    for language in layout.languages:
        lowered = language.lower()
        if lowered == wanted_lower or lowered.endswith(f"({wanted_lower})"):
            return language
    for language in layout.languages:
        if language.lower().startswith(wanted_lower):
            return language
    if not layout.languages and wanted_lower in ("default", ""):
        return None
    raise errors.BadExportOption(
        field=field,
        reason=gettext("the form has no language %(language)s; it has %(languages)s")
        % {"language": wanted, "languages": ", ".join(layout.languages) or "-"},
    )


def label_of(labels: dict[str, str], language: str | None, default: str | None, name: str) -> str:
    """Return a label in the language (then the default one, then any), as plain text."""
    for key in (language, default, "default"):
        if key and labels.get(key):
            return _plain(labels[key]) or name
    for text in labels.values():
        if text:
            return _plain(text) or name
    return name


def _plain(text: str) -> str:
    return " ".join(_TAGS.sub(" ", text).split())[:250]


# ---- table plans ---------------------------------------------------------------------------------


@dataclass
class ColumnRef:
    """What an output column shows: a field (or part of one), or metadata."""

    header: str
    field: FieldInfo | None = None
    part: str | None = None  # "Latitude"... for a split geopoint, a choice for a split select
    meta: str | None = None


@dataclass
class TablePlan:
    """One output table: its name, headers, and how to make its rows from raw rows."""

    path: str | None  # None for the main table
    name: str  # the repeat's name, or the formID
    leaves: list[FieldInfo]
    headers: list[str] = field(default_factory=list)
    columns: list[ColumnRef] = field(default_factory=list)
    children: list[tuple[tuple[str, ...], TablePlan]] = field(default_factory=list)
    # Parts from the parent table's instance down to this repeat (the repeat's own name last).
    relative: tuple[str, ...] = ()
    leaf_parts: list[tuple[str, ...]] = field(default_factory=list)
    # Set by _compile: raw row -> output row, and a repeat instance (or document) -> texts.
    convert: Callable[[list[Any]], list[Any]] = field(default=None, repr=False)  # type: ignore[assignment]
    extract: Callable[[Any], list[str]] = field(default=None, repr=False)  # type: ignore[assignment]
    width: int = 0
    file_name: str = ""

    def text_columns(self) -> list[bool]:
        """Tell, per output column, whether its cells are always text (for Excel writers)."""
        typed_fields = ("int", "decimal", "date", "dateTime", "time", "boolean")
        return [
            (column.meta is not None and column.meta not in _TYPED_META)
            or (
                column.field is not None
                and column.part is None
                and column.field.type not in typed_fields
            )
            for column in self.columns
        ]

    @property
    def meta_width(self) -> int:
        return META_WIDTH if self.path is None else REPEAT_META_WIDTH

    def leaf_index(self, path: str) -> int:
        """Return the position of a field's text in this table's raw rows (KeyError if absent)."""
        positions = self.__dict__.get("_positions")
        if positions is None:
            positions = {leaf.path: self.meta_width + i for i, leaf in enumerate(self.leaves)}
            self.__dict__["_positions"] = positions
        return positions[path]

    def walk(self) -> Iterator[TablePlan]:
        """Yield this table and every table below it, depth first."""
        yield self
        for _parts, child in self.children:
            yield from child.walk()


@dataclass
class Plan:
    """Every table of an export and what it needs to know."""

    layout: FormLayout
    main: TablePlan
    options: ExportOptions
    target: Target
    language: str | None
    # The language of choice labels (options.choice_labels), None for the default labels.
    choice_language: str | None = None

    def tables(self) -> list[TablePlan]:
        return list(self.main.walk())


def select_leaves(layout: FormLayout, options: ExportOptions) -> set[str]:
    """Return the paths of the questions the export shows (options ``fields``, deleted ones)."""
    leaves = [
        f
        for f in layout.leaves()
        if (options.deleted_fields or not f.deleted) and not (f.pii and options.pii == "omit")
    ]
    if not options.fields:
        return {f.path for f in leaves}
    chosen: set[str] = set()
    for wanted in options.fields:
        matches = _matching(layout, wanted)
        if not matches:
            raise errors.BadExportOption(
                field="fields",
                reason=gettext("the form has no field %(field)s") % {"field": wanted},
            )
        chosen |= matches
    return {f.path for f in leaves if f.path in chosen}


def _matching(layout: FormLayout, wanted: str) -> set[str]:
    wanted = wanted.strip()
    if wanted.startswith("/"):
        prefix = wanted.rstrip("/")
        return {
            f.path for f in layout.leaves() if f.path == prefix or f.path.startswith(prefix + "/")
        }
    by_name = {f.path for f in layout.fields if f.name == wanted}
    by_header = {f.path for f in layout.fields if "-".join(f.parts) == wanted}
    tops = by_header or by_name
    found: set[str] = set()
    for top in tops:
        found |= {f.path for f in layout.leaves() if f.path == top or f.path.startswith(top + "/")}
    return found


def build_plan(
    layout: FormLayout,
    options: ExportOptions,
    target: Target,
    *,
    pseudonymise: Callable[[Any], str] | None = None,
) -> Plan:
    """Decide every table, header and converter of an export."""
    language = resolve_language(layout, options.language) if options.headers == "labels" else None
    choice_language = (
        resolve_language(layout, options.choice_labels, field="choiceLabels")
        if options.choice_labels
        else None
    )
    shown = select_leaves(layout, options)
    main = TablePlan(path=None, name=layout.xml_form_id, leaves=[])
    tables: dict[str | None, TablePlan] = {None: main}
    for repeat in layout.repeats:
        tables[repeat.path] = TablePlan(path=repeat.path, name=repeat.name, leaves=[])
    for leaf in layout.leaves():
        if leaf.path in shown:
            tables[leaf.repeat].leaves.append(leaf)
    # Link each repeat to its parent table; keep a repeat when it or one below it shows a field.
    for repeat in layout.repeats:
        plan = tables[repeat.path]
        plan.relative = tuple(repeat.path.split("/")[2:])
        parent = _parent_repeat(layout, repeat)
        if parent is not None:
            plan.relative = plan.relative[len(parent.split("/")) - 2 :]
        tables[parent].children.append((plan.relative, plan))
    _prune(main)
    plan = Plan(layout, main, options, target, language, choice_language)
    for table in main.walk():
        _compile(plan, table, pseudonymise)
    _name_files(plan)
    return plan


def _parent_repeat(layout: FormLayout, repeat: FieldInfo) -> str | None:
    enclosing = [r.path for r in layout.repeats if repeat.path.startswith(r.path + "/")]
    return max(enclosing, key=len) if enclosing else None


def _prune(table: TablePlan) -> bool:
    """Drop repeat tables with nothing to show; tell whether ``table`` is kept."""
    table.children = [(parts, child) for parts, child in table.children if _prune(child)]
    return table.path is None or bool(table.leaves) or bool(table.children)


def _header_parts(plan: Plan, table: TablePlan, leaf: FieldInfo) -> list[str]:
    """Return the names (or labels) from the table down to the field."""
    depth = 0 if table.path is None else len(table.path.split("/")) - 2
    parts = leaf.parts[depth:]
    if not plan.options.group_paths:
        parts = parts[-1:]
    if plan.options.headers == "names":
        return list(parts)
    layout = plan.layout
    names = []
    for index in range(len(leaf.parts) - len(parts), len(leaf.parts)):
        node = layout.by_path.get("/" + layout.root + "/" + "/".join(leaf.parts[: index + 1]))
        if node is None:
            names.append(leaf.parts[index])
            continue
        names.append(label_of(node.labels, plan.language, layout.default_language, node.name))
    return names


def _compile(plan: Plan, table: TablePlan, pseudonymise: Callable[[Any], str] | None) -> None:
    """Fill a table's headers, column references, itemgetter and converters."""
    options, layout = plan.options, plan.layout
    sep = options.separator
    typed = plan.target == "xlsx"
    # A workbook's text cells are strings, never formulas; a CSV's are whatever Excel reads.
    guard = not typed and options.escape_formulas
    sources: list[int] = []
    headers: list[str] = []
    columns: list[ColumnRef] = []
    handlers: list[tuple[int, int, Callable[[Any], Any], str | None]] = []
    guarded: list[tuple[int, Callable[[str], Any]]] = []  # see compiled.converter
    hide_pii = options.pii != "plain"

    def add(header: str, source: int, ref: ColumnRef) -> None:
        headers.append(header)
        columns.append(ref)
        sources.append(source)

    if table.path is None:
        add("SubmissionDate", M_DATE, ColumnRef("SubmissionDate", meta="SubmissionDate"))
        if typed:
            handlers.append((0, 1, values.xlsx_moment, None))
    table.leaf_parts = []
    depth = 0 if table.path is None else len(table.path.split("/")) - 2
    for index, leaf in enumerate(table.leaves):
        table.leaf_parts.append(leaf.parts[depth:])
        source = table.meta_width + index
        base = sep.join(_header_parts(plan, table, leaf))
        position = len(sources)
        if leaf.pii and hide_pii and pseudonymise is not None:
            add(base, source, ColumnRef(base, field=leaf))
            handlers.append((position, 1, _pseudonymising(leaf.type, pseudonymise), None))
            continue
        if leaf.type == "geopoint" and options.split_geopoints:
            for part, suffix in zip(values.GEO_PARTS, _geo_suffixes(plan), strict=True):
                header = f"{base}{sep}{suffix}"
                add(header, source, ColumnRef(header, leaf, part))
            handlers.append((position, 4, _geo_splitter(typed, guard), None))
            continue
        choices = leaf.choice_names
        labelled = _choice_labeller(plan, leaf, guard) if options.choice_labels else None
        if labelled is not None and not (
            leaf.type == "select_multiple" and options.split_select_multiples
        ):
            add(base, source, ColumnRef(base, field=leaf))
            handlers.append((position, 1, labelled, None))
            continue
        if leaf.type == "select_multiple" and options.split_select_multiples and choices:
            add(base, source, ColumnRef(base, field=leaf))
            labels = [
                label_of(c.labels, plan.language, layout.default_language, c.name)
                if options.headers == "labels"
                else c.name
                for c in leaf.choices or []
            ]
            for choice, label in zip(choices, labels, strict=True):
                add(f"{base}/{label}", source, ColumnRef(f"{base}/{label}", leaf, choice))
            split = _select_splitter(choices, typed, guard, labelled)
            handlers.append((position, 1 + len(choices), split, None))
            continue
        add(base, source, ColumnRef(base, field=leaf))
        if typed:
            converter, clean = values.xlsx_converter(leaf.type), None
        else:
            converter = values.csv_converter(leaf.type, guard=guard)
            clean = compiled.CSV_ALREADY_CLEAN.get(leaf.type)
        if converter is not None:
            handlers.append((position, 1, converter, clean))
        elif guard:
            guarded.append((position, values.csv_guard(leaf.type)))
    if table.path is None:
        for header, source in MAIN_TRAILER:
            position = len(sources)
            add(header, source, ColumnRef(header, meta=header))
            if header == "FormVersion":
                handlers.append((position, 1, _version_lookup(layout.versions, guard), None))
            elif header == "instanceName" and layout.personal.instance_name and hide_pii:
                handlers.append((position, 1, pseudonymise or _blank, None))
            elif typed and header in _INTEGER_META:
                handlers.append((position, 1, _meta_int, None))
            elif guard and header in _CLIENT_TEXT_META:
                guarded.append((position, values.guard_formula))
    else:
        for header, source in (("PARENT_KEY", R_PARENT_KEY), ("KEY", R_KEY)):
            position = len(sources)
            add(header, source, ColumnRef(header, meta=header))
            if guard:  # both begin with the record's instanceID, which the client wrote
                guarded.append((position, values.guard_formula))
    table.headers = _unique(headers)
    if guard:  # labels come from a coordinator's spreadsheet ("- de 15 ans")
        table.headers = [values.guard_formula(header) for header in table.headers]
    for column, header in zip(columns, table.headers, strict=True):
        column.header = header
    table.columns = columns
    table.width = len(sources)
    table.convert = compiled.converter(sources, handlers, guarded)
    table.extract = compiled.extractor(table.leaf_parts)


_INTEGER_META = ("SubmitterID", "AttachmentsPresent", "AttachmentsExpected", "Edits")
# Metadata typed in workbooks: those numbers, and SubmissionDate (a date-time, UTC).
_TYPED_META = (*_INTEGER_META, "SubmissionDate")
# Metadata whose text a client chose: the instanceID, an account's or app user's name, the
# deviceID of the query string, the record's instanceName.
_CLIENT_TEXT_META = ("KEY", "SubmitterName", "DeviceID", "instanceName")


def _unique(headers: list[str]) -> list[str]:
    """Make headers unique within a table (``name~2``), as Central names clashing files."""
    seen: dict[str, int] = {}
    out = []
    for header in headers:
        count = seen.get(header, 0) + 1
        seen[header] = count
        out.append(header if count == 1 else f"{header}~{count}")
    return out


def _name_files(plan: Plan) -> None:
    """Name each repeat table's file ``<formId>-<repeat>.csv`` (``~n`` on clashes, as Central)."""
    tables = plan.tables()
    plan.main.file_name = f"{_safe_file(plan.layout.xml_form_id)}.csv"
    totals: dict[str, int] = {}
    for table in tables[1:]:
        totals[table.name] = totals.get(table.name, 0) + 1
    counts: dict[str, int] = {}
    for table in tables[1:]:
        stem = f"{plan.layout.xml_form_id}-{table.name}"
        if totals[table.name] > 1:
            counts[table.name] = counts.get(table.name, 0) + 1
            stem += f"~{counts[table.name]}"
        table.file_name = f"{_safe_file(stem)}.csv"


_UNSAFE_FILE = re.compile(r'[\x00-\x1f<>:"/\\|?*]')


def _safe_file(name: str) -> str:
    return _UNSAFE_FILE.sub("_", name).strip(" .") or "export"


def _blank(_value: Any) -> str:
    return ""


def _meta_int(value: Any) -> Any:
    if value is None or value == "":
        return ""
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _version_lookup(versions: dict[str, str], guard: bool) -> Callable[[Any], str]:
    if guard:  # once per export, not per cell
        versions = {key: values.guard_formula(name) for key, name in versions.items()}

    def lookup(value: Any) -> str:
        return versions.get(str(value), "")

    return lookup


def _geo_splitter(typed: bool, guard: bool) -> Callable[[str], list[Any]]:
    def split(value: str) -> list[Any]:
        return values.split_geopoint(value, typed=typed, guard=guard)

    return split


def _select_splitter(
    choices: list[str], typed: bool, guard: bool, labelled: Callable[[str], str] | None = None
) -> Callable[[str], list[Any]]:
    blank = [""] * len(choices)
    yes, no = (1, 0) if typed else ("1", "0")
    show = values.guard_formula if guard else str
    if labelled is not None:  # the answer's labels (already guarded), then the 0/1 cells

        def split_labelled(value: str) -> list[Any]:
            if not value:
                return ["", *blank]
            picked = set(value.split())
            return [labelled(value), *(yes if c in picked else no for c in choices)]

        return split_labelled

    def split(value: str) -> list[Any]:
        if not value:
            # Not answered is not "not chosen": the 0/1 cells stay empty.
            return ["", *blank]
        picked = set(value.split())
        return [show(" ".join(value.split())), *(yes if c in picked else no for c in choices)]

    return split


def _geo_suffixes(plan: Plan) -> list[str]:
    """Return the suffixes of a split geopoint's columns: in the labels' language when the
    headers are labels (a form language the console speaks, else the reader's), else
    Central's English names."""
    if plan.options.headers != "labels":
        return list(values.GEO_PARTS)
    code = languages.console_language(plan.language) if plan.language else None
    with force_locale(code) if code else nullcontext():
        return [str(word) for word in values.GEO_WORDS]


def _choice_labeller(plan: Plan, leaf: FieldInfo, guard: bool) -> Callable[[str], str] | None:
    """Return what turns a select's answer into its choice labels (None: not a select with
    known choices). Choices outside the list (an older version's, a file not attached) stay
    as they are; a select-multiple answer's labels are joined by ``; ``."""
    if leaf.type not in SELECT_TYPES or not leaf.choices:
        return None
    layout = plan.layout
    names = {
        c.name: label_of(c.labels, plan.choice_language, layout.default_language, c.name)
        for c in leaf.choices
    }
    show = values.guard_formula if guard else str
    if leaf.type == "select_one":

        def one(value: str) -> str:
            return show(names.get(value, value))

        return one

    def several(value: str) -> str:
        return show("; ".join(names.get(choice, choice) for choice in value.split()))

    return several


def _pseudonymising(field_type: str, pseudonymise: Callable[[Any], str]) -> Callable[[str], str]:
    normalise = values.csv_converter(field_type)

    def hide(value: str) -> str:
        if normalise is not None and value:
            value = str(normalise(value))
        return pseudonymise(value)

    return hide
