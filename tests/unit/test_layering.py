"""The refusal a tablet gets is written once (issue 17).

"404 for a tablet, 403 for anyone else" is one function, :func:`server.auth.access.require_on_form`:
the test fails when the choice between the two is written anywhere else.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server"


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), _relative(path))


def _names(node: ast.expr) -> str:
    """Return the name a raised problem is built from (``errors.NotFound()`` -> NotFound)."""
    func = node.func if isinstance(node, ast.Call) else node
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def test_the_refusal_of_a_tablet_is_chosen_in_one_place():
    """``NotFound() if <a tablet> else Forbidden()`` is written only in server/auth/access.py."""
    found = []
    for path in sorted(SERVER.rglob("*.py")):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.IfExp) and {_names(node.body), _names(node.orelse)} == {
                "NotFound",
                "Forbidden",
            }:
                found.append(f"{_relative(path)}:{node.lineno}")
    assert len(found) == 1 and found[0].startswith("server/auth/access.py:"), found
