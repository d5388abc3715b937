"""The repository workflow: XLSForms in git, compiled XForms in git, published on start.

::

    xlsforms/<form_id>.xlsx          a coordinator's XLSForm (.xlsx, .xls or .md)
    xlsforms/media/<form_id>/        its media: images, audio, video, CSV choice lists
        |  merit forms build          (make run does it first)
        v
    forms/<form_id>.xml              the compiled XForm, never edited by hand
    forms/<form_id>.json             the build record: source file and its SHA-256, the XForm's
                                     MD5, fields marked pii, media with their MD5, warnings
    forms/<form_id>-media/           the media files the XForm references (and itemsets.csv
                                     for external choices)
        |  merit forms publish --project N    (every start publishes into project 1)
        v
    one published version per distinct XForm: the same XML publishes nothing new; changed XML
    with a new version becomes the new version; changed XML under a version already
    published is refused with a clear error (bump ``version`` in the settings sheet).

The build is deterministic (no dates, no machine-specific paths), so a test can rebuild into a
temporary folder and compare with the committed ``forms/``: a stale ``forms/`` fails the
suite. Publishing prefers the source spreadsheet named by the build record (when it is there
with the same SHA-256), so that the version keeps its spreadsheet and its pii marks; otherwise
it publishes the XForm itself with the pii marks from the record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session

from server import errors
from server.forms import compiler, schema, services, xform

log = logging.getLogger(__name__)

SOURCE_TYPES = (".xlsx", ".xls", ".md")


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Built:
    """One form the build wrote."""

    form_id: str
    version: str
    source: Path
    xml_path: Path
    media: list[str]
    warnings: list[compiler.Message]
    validation: compiler.Validation


@dataclass
class BuildFailed(Exception):
    """Some XLSForms did not compile; nothing was written. ``problems`` maps file to messages."""

    problems: dict[str, list[str]] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = []
        for name, messages in self.problems.items():
            lines.append(f"{name}:")
            lines.extend(f"  {message}" for message in messages)
        return "\n".join(lines)


def _where(message: dict[str, Any]) -> str:
    parts = [
        f"{label} {message[key]}"
        for key, label in (("sheet", "sheet"), ("row", "row"), ("column", "column"))
        if message.get(key) not in (None, "")
    ]
    return f"[{', '.join(parts)}] " if parts else ""


def sources(source_dir: Path) -> list[Path]:
    """Return the XLSForms of a folder (not Excel's ``~$`` lock files), by name."""
    if not source_dir.is_dir():
        return []
    return sorted(
        path
        for path in source_dir.iterdir()
        if path.is_file()
        and path.suffix.lower() in SOURCE_TYPES
        and not path.name.startswith(("~$", "."))
    )


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.name


# Characters no file name may hold on Linux, macOS or Windows (the repository is cloned on
# all three), besides control characters.
_NOT_IN_FILE_NAMES = frozenset('/\\<>:"|?*')


def file_name_problem(form_id: str) -> str | None:
    """Tell why ``form_id`` cannot name the files of this folder (None when it can).

    The API takes any formID Central takes (``a/b``, ``../x``); this folder names files
    after it (``forms/<form_id>.xml``, ``xlsforms/media/<form_id>/``), so here a formID must
    be a plain file name, which nothing can turn into a path elsewhere.
    """
    if (
        any(c in _NOT_IN_FILE_NAMES or ord(c) < 32 or ord(c) == 127 for c in form_id)
        or form_id.startswith(".")
        or form_id.endswith((".", " "))
    ):
        return (
            f"form_id {form_id!r} cannot name a file here: use letters, digits, - and _ "
            '(no / \\ < > : " | ? *, not starting with a dot)'
        )
    return None


def build(source_dir: Path, out_dir: Path, *, validate: bool = True) -> list[Built]:
    """Compile every XLSForm of ``source_dir`` into ``out_dir`` with its media.

    Compiles everything first: when any form fails (pyxform, ODK Validate, or a referenced
    media file missing from ``media/<form_id>/``), raises :class:`BuildFailed` listing every
    problem and writes nothing. Outputs of forms no longer in ``source_dir`` are removed.
    """
    compiled: list[tuple[Path, compiler.CompiledForm, dict[str, bytes]]] = []
    failed = BuildFailed()
    seen: dict[str, Path] = {}
    declared: set[str] = set()  # the entity lists the forms create or update
    absent: dict[str, tuple[Path, list[str]]] = {}
    for path in sources(source_dir):
        try:
            form = compiler.compile_upload(
                path.read_bytes(),
                filename=path.name,
                form_id_fallback=path.stem,
                validate=validate,
            )
        except errors.XlsformInvalid as exc:
            failed.problems[path.name] = [
                _where(m) + m["message"] for m in exc.details.get("errors", [])
            ]
            continue
        if (problem := file_name_problem(form.form_id)) is not None:
            failed.problems[path.name] = [problem]
            continue
        if form.form_id in seen:
            failed.problems[path.name] = [
                f"form_id {form.form_id} is also the form_id of {seen[form.form_id].name}"
            ]
            continue
        seen[form.form_id] = path
        media_dir = source_dir / "media" / form.form_id
        if not media_dir.is_dir():
            media_dir = source_dir / "media" / path.stem
        extracted = schema.extract(form.xml)
        referenced = [m.name for m in schema.FormSchema.of(extracted).media]
        declared.update(block["dataset"] for block in extracted["entities"])
        files: dict[str, bytes] = {}
        missing = []
        for name in referenced:
            candidate = media_dir / name
            if name == "itemsets.csv" and form.itemsets is not None:
                files[name] = form.itemsets
            elif candidate.is_file() and candidate.resolve().is_relative_to(media_dir.resolve()):
                files[name] = candidate.read_bytes()
            else:
                missing.append(name)
        absent[path.name] = (media_dir, missing)
        compiled.append((path, form, files))
    # A <list>.csv no file gives is an entity list when a form declares that list: the server
    # makes it from the entities (server/entities/listfile.py).
    for path, form, _files in list(compiled):
        media_dir, missing = absent[path.name]
        missing = [n for n in missing if not (n.endswith(".csv") and n[:-4] in declared)]
        if missing:
            failed.problems[path.name] = [
                f"media file missing from {_relative(media_dir, source_dir.parent)}/: {name}"
                for name in missing
            ]
            compiled.remove((path, form, _files))
    if failed.problems:
        raise failed
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    for path, form, files in compiled:
        built.append(_write(source_dir, out_dir, path, form, files))
    _remove_stale(out_dir, {b.form_id for b in built})
    return built


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    path.write_bytes(data)


def _write(
    source_dir: Path,
    out_dir: Path,
    path: Path,
    form: compiler.CompiledForm,
    files: dict[str, bytes],
) -> Built:
    xml_bytes = form.xml.encode("utf-8")
    xml_path = out_dir / f"{form.form_id}.xml"
    _write_if_changed(xml_path, xml_bytes)
    media_out = out_dir / f"{form.form_id}-media"
    if files:
        media_out.mkdir(exist_ok=True)
        for name, data in files.items():
            _write_if_changed(media_out / name, data)
        for extra in media_out.iterdir():
            if extra.name not in files:
                extra.unlink() if extra.is_file() else shutil.rmtree(extra)
    elif media_out.exists():
        shutil.rmtree(media_out)
    record = {
        "formId": form.form_id,
        "version": form.version,
        "title": form.title,
        "source": _relative(path, source_dir.parent),
        "sourceSha256": _sha256(path.read_bytes()),
        "xmlMd5": _md5(xml_bytes),
        "pii": sorted(form.pii),
        "media": [{"name": name, "md5": _md5(data)} for name, data in sorted(files.items())],
        "warnings": [w.to_json() for w in form.warnings],
    }
    text = json.dumps(record, ensure_ascii=False, indent=2, sort_keys=False) + "\n"
    _write_if_changed(out_dir / f"{form.form_id}.json", text.encode("utf-8"))
    return Built(
        form_id=form.form_id,
        version=form.version,
        source=path,
        xml_path=xml_path,
        media=sorted(files),
        warnings=form.warnings,
        validation=form.validation,
    )


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Remove outputs of forms whose XLSForm is gone (only files this build writes)."""
    for record_path in out_dir.glob("*.json"):
        form_id = record_path.stem
        if form_id in keep:
            continue
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or record.get("formId") != form_id:
            continue  # not a build record
        (out_dir / f"{form_id}.xml").unlink(missing_ok=True)
        shutil.rmtree(out_dir / f"{form_id}-media", ignore_errors=True)
        record_path.unlink()


# ---- publishing ------------------------------------------------------------------------------

Status = Literal["created", "updated", "unchanged", "failed"]


@dataclass
class Outcome:
    """What publishing one built form did."""

    form_id: str
    status: Status
    version: str = ""
    message: str | None = None


def _read_record(forms_dir: Path, form_id: str) -> dict[str, Any]:
    path = forms_dir / f"{form_id}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _upload_for(
    forms_dir: Path, xml_path: Path, xml: bytes, record: dict[str, Any]
) -> services.Upload:
    """Prefer the source spreadsheet (kept with the version) when it matches the build."""
    source = record.get("source")
    if isinstance(source, str) and record.get("xmlMd5") == _md5(xml):
        path = (forms_dir.parent / source).resolve()
        if path.is_file() and path.is_relative_to(forms_dir.parent.resolve()):
            data = path.read_bytes()
            if _sha256(data) == record.get("sourceSha256"):
                return services.Upload(data=data, filename=path.name)
    pii = record.get("pii") if record.get("xmlMd5") == _md5(xml) else None
    return services.Upload(
        data=xml,
        filename=xml_path.name,
        content_type="application/xml",
        pii=frozenset(p for p in pii or () if isinstance(p, str)),
    )


def _media_for(forms_dir: Path, form_id: str) -> dict[str, bytes]:
    folder = forms_dir / f"{form_id}-media"
    if not folder.is_dir():
        return {}
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def _publish_one(db_session: Session, forms_dir: Path, xml_path: Path, project_id: int) -> Outcome:
    xml = xml_path.read_bytes()
    try:
        ident = xform.identity(xform.parse(xml))
    except xform.XFormError as exc:
        return Outcome(xml_path.stem, "failed", message=f"not a readable XForm: {exc}")
    if (problem := file_name_problem(ident.form_id)) is not None:
        return Outcome(xml_path.stem, "failed", message=problem)
    record = _read_record(forms_dir, ident.form_id)
    media = _media_for(forms_dir, ident.form_id)
    upload = _upload_for(forms_dir, xml_path, xml, record)
    md5 = _md5(xml)
    form = services.find_form(db_session, project_id, ident.form_id)
    if form is None:
        services.create_form(
            db_session,
            project_id,
            upload,
            publish=True,
            ignore_warnings=True,  # the build showed them to whoever wrote the form
            form_id_fallback=ident.form_id,
            media=media,
        )
        return Outcome(ident.form_id, "created", ident.version)
    current = services.current_version(db_session, form)
    # Compare what was uploaded, not what is served: the server may have added a managed
    # encryption key (and a version suffix) when it published.
    if current is not None and (current.source_hash or current.hash) == md5:
        published = {
            a.name: blob.md5 if blob else None
            for a, blob in services.attachments(db_session, current)
            if a.dataset_id is None  # an entity list: made by the server, never a file
        }
        if published == {name: _md5(data) for name, data in media.items()}:
            return Outcome(ident.form_id, "unchanged", ident.version)
    same = services.version_for_submission(db_session, form, ident.version, draft=False)
    if same is not None and (same.source_hash or same.hash) != md5:
        raise errors.VersionConflict(form_id=ident.form_id, version=ident.version or '""')
    services.set_draft(db_session, form, upload, ignore_warnings=True, media=media)
    services.publish_draft(db_session, form)
    return Outcome(ident.form_id, "updated", ident.version)


def publish_outcomes(db_session: Session, forms_dir: Path, project_id: int) -> list[Outcome]:
    """Publish every built form of ``forms_dir`` into a project; report each one."""
    outcomes = []
    if not forms_dir.is_dir():
        return outcomes
    for xml_path in sorted(forms_dir.glob("*.xml")):
        try:
            outcomes.append(_publish_one(db_session, forms_dir, xml_path, project_id))
        except errors.Problem as problem:
            db_session.rollback()
            detail = problem.render_message()
            problems = problem.details.get("errors") if isinstance(problem.details, dict) else None
            if problems:
                detail += " " + "; ".join(_where(m) + m["message"] for m in problems)
            outcomes.append(Outcome(xml_path.stem, "failed", message=detail))
    return outcomes


def publish_folder(db_session: Session, forms_dir: Path, project_id: int) -> list[str]:
    """Publish the built forms into a project; return the formIDs now published from it.

    Failures are logged, not raised: one bad form must not keep the server from starting.
    """
    published = []
    for outcome in publish_outcomes(db_session, forms_dir, project_id):
        if outcome.status == "failed":
            log.error("form %s not published: %s", outcome.form_id, outcome.message)
        else:
            published.append(outcome.form_id)
    return published
