"""Personal data: which answers are personal, and what each reader may see of them.

Every reader of answers goes through this module: the API's records (their instanceName, XML
and versions, attachments), OData, the console's lists, record pages, search, overview and
map, and the exports (CSV, XLSX, GeoJSON, media). A reader gets a :class:`Disclosure` for a
form from :func:`for_form` and asks it for each document, XML, instanceName or file it is about
to hand out; nothing else in the code reads answers for a person (the raw columns are read only
by intake, the export source and the backups; ``tests/hostile/test_analyst_personal_data.py``
walks every route with a planted value and checks which modules read the raw columns).

**What is personal** in a form (the union over all its versions: a field marked once stays
personal for every record, whichever version it was filled on):

* the questions marked ``yes`` in the XLSForm's ``pii`` column;
* calculations that read a personal answer, directly or through other calculations
  (``concat(${name}, ' ', ${surname})``);
* ``meta/instanceName`` when its expression reads a personal answer (the record's title), or
  reads what cannot be told from the expression (another instance, ``//``, ``*``) while the
  form has personal answers;

* the files answered to a personal question (a photo of a face, a signature).

**Who sees it in clear**: holders of ``submission.pii`` over the form (coordinators and
administrators). Everyone else reads a pseudonym where the output holds text: a keyed hash of
the value, the same for one value across every reader and export of a project (``pid_…``), so
that analysts can still count and join; where the output is typed (numbers, dates, places in
OData, GeoJSON geometry) the value is empty, and personal files are not served at all.

**Seeing it is audited**: each request that hands out personal values in clear records one
``submission.pii.read`` event naming the records (their instanceIDs, up to
:data:`MAX_AUDITED_IDS`, and how many) and the way they were read. The event is written before
the response leaves; if it cannot be written the response is refused (503), never sent
unaudited. Exports record their own event with the personal-data mode they used.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, current_app, g, has_request_context, request
from lxml import etree

from server import errors
from server.forms.schema import Field, FormSchema, parts_of, values_at

PII_VERB = "submission.pii"
AUDIT_ACTION = "submission.pii.read"
MAX_AUDITED_IDS = 100
PSEUDONYM_PREFIX = "pid_"

# What an instanceName expression may read without naming it: another instance, any
# descendant, the context node. With such steps it is taken as personal (when the form has
# personal answers at all), since what it reads cannot be told.
_UNRESOLVED = re.compile(r"instance\s*\(|//|current\s*\(\s*\)|\*|\bself::|\bancestor|\bdescendant")
_STRINGS = re.compile(r"'[^']*'|\"[^\"]*\"")
# Repeat positions in a path as Collect's audit log writes them: /data/members[2]/name.

_INDEXES = re.compile(r"\[\d+\]")
# Absolute paths (``/data/grp/q``) and relative steps (``../q``, ``./q``) in an XPath expression.
_ABSOLUTE = re.compile(r"(?<![\w.:@-])(/[A-Za-z_][\w.-]*(?:/[A-Za-z_][\w.-]*)*)")
_RELATIVE = re.compile(r"(?<![\w/.:@-])((?:\.\./)+|\./)([A-Za-z_][\w.-]*(?:/[A-Za-z_][\w.-]*)*)")


# ---- what is personal ----------------------------------------------------------------------


@dataclass(frozen=True)
class PersonalFields:
    """The personal answers of a form: their paths, types, and whether instanceName is one."""

    root: str = "data"
    types: Mapping[str, str] = field(default_factory=dict)  # path -> field type
    instance_name: bool = False
    # The client audit log (meta/audit): with track-changes it holds every answer's old and
    # new values, so it is a personal file whenever the form has personal answers.
    audit_paths: frozenset[str] = frozenset()

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(self.types)

    def __bool__(self) -> bool:
        return bool(self.types) or self.instance_name

    def is_personal(self, path: str) -> bool:
        """Tell whether the answer at ``path`` (``/data/grp/q``) is personal."""
        return path in self.types or (self.instance_name and path == self.instance_name_path)

    @property
    def instance_name_path(self) -> str:
        return f"/{self.root}/meta/instanceName"

    def file_paths(self) -> list[str]:
        """Return the paths of the questions whose files are personal."""
        files = [p for p, t in self.types.items() if t == "binary"]
        return [*files, *sorted(self.audit_paths)] if self.types else files


def _references(expression: str | None, own_path: str) -> set[str]:
    """Return the absolute paths an XPath expression reads (``${x}`` is written absolute)."""
    if not expression:
        return set()
    found = set(_ABSOLUTE.findall(expression))
    for ups, rest in _RELATIVE.findall(expression):
        # The context node is the field itself: ``../x`` is a sibling, ``./x`` a child.
        base = own_path.split("/")
        for _ in range(ups.count("../")):
            base = base[:-1]
        found.add("/".join([*base, rest]))
    return found


def personal_fields(
    schemas: Iterable[FormSchema | Mapping[str, Any] | None],
) -> PersonalFields:
    """Return what the field schemas of a form's versions mark personal (their union)."""
    types: dict[str, str] = {}
    audits: set[str] = set()
    calculates: dict[str, tuple[str, str | None]] = {}  # path -> (type, expression)
    instance_names: list[tuple[str, str]] = []  # (root, expression)
    root = "data"
    for stored in schemas:
        if not stored:
            continue
        schema = FormSchema.of(stored)
        root = schema.root
        audits |= schema.audit_paths
        for entry in schema.questions:
            if entry.pii:
                types[entry.path] = entry.type
            elif entry.calculate:
                calculates[entry.path] = (entry.type, entry.calculate)
        if schema.instance_name:
            instance_names.append((schema.root, schema.instance_name))
    # Calculations reading a personal answer are personal too, however many steps away.
    changed = True
    while changed:
        changed = False
        for path, (kind, expression) in calculates.items():
            if path not in types and _references(expression, path) & types.keys():
                types[path] = kind
                changed = True
    instance_name = bool(types) and any(
        f"/{name_root}/meta/instanceName" in types
        or _references(expression, f"/{name_root}/meta/instanceName") & types.keys()
        or _UNRESOLVED.search(_STRINGS.sub("''", expression))
        for name_root, expression in instance_names
    )
    return PersonalFields(
        root=root, types=types, instance_name=instance_name, audit_paths=frozenset(audits)
    )


# ---- pseudonyms ------------------------------------------------------------------------------


class Pseudonymiser:
    """Replaces a value by a keyed hash: the same value gives the same pseudonym in a project.

    The key is derived from the server's secret key and the project id, so pseudonyms can be
    joined across exports of one project but not across projects, and cannot be reversed
    without the secret key.
    """

    prefix = PSEUDONYM_PREFIX

    def __init__(self, secret_key: str, project_id: int) -> None:
        self.key = hmac.new(
            secret_key.encode(), f"merit-export-pseudonym:{project_id}".encode(), hashlib.sha256
        ).digest()

    def __call__(self, value: Any) -> str:
        """Return the pseudonym of a value ('' stays '')."""
        if value is None or value == "":
            return ""
        text = value if isinstance(value, str) else str(value)
        digest = hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()
        return self.prefix + digest[:20]


def pseudonymiser_for(project_id: int) -> Pseudonymiser:
    """Return the project's pseudonymiser, keyed with this server's secret key."""
    return Pseudonymiser(current_app.config["SECRET_KEY"], project_id)


def normalised(field_type: str, value: Any) -> Any:
    """Return the value a pseudonym is taken of: the exports' CSV cell of that answer.

    Exports pseudonymise the cell they would write (an integer without its leading zeros, a
    date without its time...): every reader takes the same, so a pseudonym read in OData or on
    a record page is the one in the CSV.
    """
    from server.exports import values

    convert = values.csv_converter(field_type)
    if convert is None or not isinstance(value, str) or not value:
        return value
    return str(convert(value.strip()))


# ---- what one reader sees --------------------------------------------------------------------


class Disclosure:
    """What one reader sees of one form's answers; remembers what it showed in clear."""

    def __init__(
        self,
        fields: PersonalFields,
        *,
        clear: bool,
        pseudonymise: Callable[[Any], str],
        project_id: int | None = None,
        form_id: int | None = None,
    ) -> None:
        self.fields = fields
        self.clear = clear
        self.pseudonymise = pseudonymise
        self.project_id = project_id
        self.form_id = form_id
        self.seen: dict[str, list[str]] = {}  # channel -> instanceIDs shown in clear
        self.seen_counts: dict[str, int] = {}
        self._quiet = False
        self._parts = {
            path: parts_of(path)
            for path in [*fields.types, fields.instance_name_path]
            if fields.is_personal(path)
        }

    @property
    def hides(self) -> bool:
        """Tell whether this reader gets anything hidden (the form has personal answers)."""
        return bool(self.fields) and not self.clear

    def hidden(self, path: str) -> bool:
        """Tell whether the answer at ``path`` is hidden from this reader."""
        return not self.clear and self.fields.is_personal(path)

    def _type(self, path: str) -> str:
        return self.fields.types.get(path, "string")

    def audit_value(self, node: str, value: str) -> str:
        """Return what this reader sees of a value in a client audit log (``node`` its path)."""
        return self.value(_INDEXES.sub("", node), value) if value else value

    def value(self, path: str, value: Any) -> Any:
        """Return what this reader sees of one answer (a pseudonym of a personal one)."""
        if not self.hidden(path) or value is None or value == "":
            return value
        if self._type(path) == "binary":
            return ""  # a personal file is not named either: its name leads to it
        return self.pseudonymise(normalised(self._type(path), value))

    # ---- what is handed out ------------------------------------------------------------

    def quiet(self) -> Disclosure:
        """Return this disclosure for reading only: what it shows is not handed out.

        For answers read to be counted or skipped; the caller notes what it does hand out.
        """
        copy = Disclosure(
            self.fields,
            clear=self.clear,
            pseudonymise=self.pseudonymise,
            project_id=self.project_id,
            form_id=self.form_id,
        )
        copy._quiet = True
        return copy

    def note(self, channel: str, instance_ids: Iterable[str] | None) -> None:
        """Remember that these records' personal answers went out in clear (audited)."""
        if not self.clear or not self.fields or self._quiet:
            return
        if instance_ids is None:  # every record of the form (a full listing)
            self.seen.setdefault(channel, [])
            self.seen_counts[channel] = -1
            _pending().append(self)
            return
        ids = list(instance_ids)
        if not ids:
            return
        known = self.seen.setdefault(channel, [])
        known.extend(ids)
        if self.seen_counts.get(channel) != -1:
            self.seen_counts[channel] = self.seen_counts.get(channel, 0) + len(ids)
        _pending().append(self)

    def note_listing(self, channel: str) -> None:
        """Note a listing of every record whose instanceName goes out in clear."""
        if self.fields.instance_name:
            self.note(channel, None)

    def document(self, document: Any, *, instance_id: str, channel: str) -> Any:
        """Return a record's parsed document as this reader may see it."""
        if not isinstance(document, dict) or not self.fields:
            return document
        if self.clear:
            self.note(channel, [instance_id])
            return document
        redacted = dict(document)
        for path, parts in self._parts.items():
            redacted = _replace(redacted, parts, lambda v, p=path: self.value(p, v))
        return redacted

    def answers(
        self, document: Any, fields: Iterable[Field], *, instance_id: str, channel: str
    ) -> list[list[Any]]:
        """Return the values of a few fields in a record, as this reader may see them.

        A read in clear is noted (audited) only when one of the fields is personal.
        """
        chosen = list(fields)
        if self.clear and any(self.fields.is_personal(f.path) for f in chosen):
            self.note(channel, [instance_id])
        return [[self.value(f.path, v) for v in f.values_in(document)] for f in chosen]

    def instance_name(self, name: str | None, *, instance_id: str, channel: str) -> str | None:
        """Return a record's instanceName as this reader may see it."""
        if not name or not self.fields.instance_name:
            return name
        if self.clear:
            self.note(channel, [instance_id])
            return name
        return self.pseudonymise(name)

    def xml(self, text: str, *, instance_id: str, channel: str) -> str:
        """Return a record's XML as this reader may see it (personal elements' text replaced)."""
        if not self.fields:
            return text
        if self.clear:
            self.note(channel, [instance_id])
            return text
        from server.submissions import parsing

        try:
            root = parsing.parse_xml(text.encode("utf-8"))
        except errors.Problem:
            return ""  # stored XML that no longer parses cannot be shown safely
        if etree.QName(root).namespace == ENCRYPTED_NS:
            return text  # an encrypted envelope holds no answer in clear
        _redact_tree(root, f"/{self.fields.root}", self)
        return etree.tostring(root, encoding="unicode")

    def personal_files(self, document: Any) -> set[str]:
        """Return the names of the files a record gave as answers to personal questions.

        Names are compared with accents composed (as intake matches files to answers).
        """
        from server.submissions.filenames import comparable

        names: set[str] = set()
        if not isinstance(document, dict):
            return names
        for path in self.fields.file_paths():
            for value in values_at(document, parts_of(path)):
                if isinstance(value, str) and value.strip():
                    names.add(comparable(value.strip()))
        return names

    def is_personal_file(self, document: Any, name: str) -> bool:
        """Tell whether the file ``name`` answers a personal question of the record."""
        from server.submissions.filenames import comparable

        return comparable(name) in self.personal_files(document)

    def check_file(self, document: Any, name: str, *, instance_id: str, channel: str) -> None:
        """Refuse (403) a personal file to a reader who may not see it; note it otherwise."""
        if not self.is_personal_file(document, name):
            return

        if not self.clear:
            raise errors.Forbidden(message=_personal_file_message())
        self.note(channel, [instance_id])

    @property
    def instance_name_searchable(self) -> bool:
        """Tell whether searching records by instanceName reveals nothing hidden."""
        return self.clear or not self.fields.instance_name


def unrestricted(fields: PersonalFields | None = None) -> Disclosure:
    """Return a disclosure that shows everything (commands and jobs run by the operator)."""
    return Disclosure(fields or PersonalFields(), clear=True, pseudonymise=str)


ENCRYPTED_NS = "http://www.opendatakit.org/xforms/encrypted"


def _personal_file_message() -> str:
    from flask_babel import gettext

    return gettext("This file answers a question marked as personal data, which you may not see.")


def _replace(container: Any, parts: tuple[str, ...], change: Callable[[Any], Any]) -> Any:
    """Return ``container`` with the values at ``parts`` changed (copies along the way only)."""
    if isinstance(container, list):
        return [_replace(item, parts, change) for item in container]
    if not isinstance(container, dict) or parts[0] not in container:
        return container
    copied = dict(container)
    if len(parts) == 1:
        value = copied[parts[0]]
        copied[parts[0]] = [change(v) for v in value] if isinstance(value, list) else change(value)
    else:
        copied[parts[0]] = _replace(copied[parts[0]], parts[1:], change)
    return copied


def _redact_tree(element: etree._Element, path: str, disclosure: Disclosure) -> None:
    for child in element:
        if not isinstance(child.tag, str):
            continue
        child_path = f"{path}/{etree.QName(child).localname}"
        if disclosure.fields.is_personal(child_path):
            text = "".join(child.itertext())
            for grandchild in list(child):
                child.remove(grandchild)
            shown = disclosure.value(child_path, text)
            child.text = shown if shown else None
        else:
            _redact_tree(child, child_path, disclosure)


# ---- a reader's disclosure, from the request -------------------------------------------------

_CACHE: dict[tuple[int, tuple[int, ...]], PersonalFields] = {}
_CACHE_LIMIT = 512


def fields_of_form(db_session: Any, form_id: int) -> PersonalFields:
    """Return the personal answers of a form, over every version it ever had (cached)."""
    import sqlalchemy as sa

    from server.forms.models import FormVersion

    ids = tuple(
        db_session.scalars(
            sa.select(FormVersion.id).where(FormVersion.form_id == form_id).order_by(FormVersion.id)
        )
    )
    key = (form_id, ids)
    found = _CACHE.get(key)
    if found is None:
        schemas = db_session.scalars(
            sa.select(FormVersion.schema).where(FormVersion.id.in_(ids))
        ).all()
        found = personal_fields(schemas)
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[key] = found
    return found


def may_see(form: Any) -> bool:
    """Tell whether the current reader may see ``form``'s personal answers in clear."""
    from server.auth import access

    return access.can(PII_VERB, project_id=form.project_id, form_id=form.id)


def for_form(db_session: Any, form: Any) -> Disclosure:
    """Return what the current reader may see of ``form``'s answers."""
    return Disclosure(
        fields_of_form(db_session, form.id),
        clear=may_see(form),
        pseudonymise=pseudonymiser_for(form.project_id),
        project_id=form.project_id,
        form_id=form.id,
    )


def _pending() -> list[Disclosure]:
    if not has_request_context():
        return []
    found = g.get("_personal_seen")
    if found is None:
        found = g._personal_seen = []
    return found


def _flush(response: Response) -> Response:
    """Write the audit events of the personal values this request showed in clear."""
    pending = g.pop("_personal_seen", None)
    if not pending:
        return response
    from server import db
    from server.audit import services as audit

    actor_id = g.get("actor_id")
    # The view has committed what it changes; what it left open is rolled back at teardown
    # anyway. Ending it now frees SQLite's write lock, which a request that changed data holds
    # until its transaction ends, for the event written below.
    db.end_transaction()
    try:
        with db.database().session() as db_session:
            for disclosure in dict.fromkeys(pending):
                for channel, ids in disclosure.seen.items():
                    unique = list(dict.fromkeys(ids))
                    count = disclosure.seen_counts.get(channel, len(unique))
                    audit.record(
                        db_session,
                        AUDIT_ACTION,
                        actor_id=actor_id,
                        project_id=disclosure.project_id,
                        form_id=disclosure.form_id,
                        details={
                            "channel": channel,
                            "path": request.path,
                            "count": len(unique) if count >= 0 else None,
                            "allRecords": count < 0,
                            "instanceIds": unique[:MAX_AUDITED_IDS],
                        },
                    )
            db_session.commit()
    except Exception:
        # Never hand out personal data unaudited: the answer already built is dropped.
        current_app.logger.exception("could not audit a read of personal data; refused")
        return errors.render(errors.AuditUnavailable(headers={"Retry-After": "10"}))
    return response


def init_app(app: Flask) -> None:
    """Audit, at the end of each request, the personal values it showed in clear."""
    app.after_request(_flush)
