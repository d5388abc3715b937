"""The blob catalogue has one writer, and a record's attachment slots one module that fills them.

``server/storage/services.py`` (``catalogue``) is the only code that writes the ``blobs``
table: a row there promises durable bytes, so it is written in one place, after the store
confirmed them. ``server/submissions/attachments.py`` is the only code that writes a record's
slots (``create_slots``, ``fill``, ``clear``): which copy of a file a slot keeps is decided
there. Both tests read the whole server package, so that a new writer cannot be added
elsewhere without failing here. (A restore of a backup rewrites every table, by name.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"
WRITES = {"insert", "update", "delete", "insert_or_ignore"}


def _writers(model: str) -> Iterator[str]:
    """Yield ``path:line`` of every statement in server/ that writes ``model``'s table.

    A write is an ORM construction of the model, or a Core insert, update or delete of its
    table, named directly or through a module-level alias (``SLOTS = Model.__table__``).
    """
    for path in sorted(SERVER.rglob("*.py")):
        relative = str(path.relative_to(SERVER.parent))
        if "/migrations/versions/" in relative:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), relative)
        names = {model} | {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign) and model in ast.unparse(node.value).split(".")
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            mentioned = {
                n.id for arg in node.args[:2] for n in ast.walk(arg) if isinstance(n, ast.Name)
            }
            if called == model or (called in WRITES and mentioned & names):
                yield f"{relative}:{node.lineno}"


def test_only_the_storage_service_writes_the_blob_catalogue():
    stray = [w for w in _writers("Blob") if not w.startswith("server/storage/services.py:")]
    assert not stray, f"record blobs with server.storage.services.catalogue: {stray}"


def test_only_the_attachments_module_writes_a_records_slots():
    stray = [
        w
        for w in _writers("SubmissionAttachment")
        if not w.startswith("server/submissions/attachments.py:")
    ]
    assert not stray, f"fill slots with server.submissions.attachments.fill: {stray}"


def test_the_writers_are_found():
    """The two tests above would pass on a search that finds nothing: it finds the writers."""
    assert any(w.startswith("server/storage/services.py:") for w in _writers("Blob"))
    assert {w.split(":")[0] for w in _writers("SubmissionAttachment")} == {
        "server/submissions/attachments.py"
    }
