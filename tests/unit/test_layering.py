"""Views hold no SQL and commit nothing, and the refusal a tablet gets is written once (issue 17).

A view parses the request, calls a service, renders. A query written in a view is a rule the
console, the API and OpenRosa can each write differently, and a commit in a view is a change
whose durability depends on which route made it. So every view module is read (with ``ast``,
not a text search) and fails the test when it imports SQLAlchemy, or calls ``commit``,
``execute``, ``scalars``, ``scalar`` or ``flush`` (the session's ways to run SQL or make it
durable). Services commit themselves where their change must be durable ("(commits)" in
their docstrings; see server/db.py).

The view modules are those of :data:`VIEW_FOLDERS` and :data:`VIEW_FILES`, and any other
module of the server that registers a route: a new blueprint elsewhere is read too.
Helpers that sit next to the views (render.py, schemas.py, openapi.py, blueprint.py,
odata_filter.py, odata_format.py in server/api/) are not views but hold no SQL either: the rule
covers them, so that a query cannot move next door.

Not caught: a lookup by primary key (``db.session().get(Model, id)``), which ``ast`` cannot
tell from ``dict.get`` without types.

"404 for a tablet, 403 for anyone else" is one function, :func:`server.auth.access.require_on_form`:
the last test fails when the choice between the two is written anywhere else.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server"

VIEW_FOLDERS = ("server/api", "server/web/pages")
VIEW_FILES = ("server/openrosa/views.py",)

# Modules that register routes and may run SQL, each with why.
NOT_VIEWS = {
    # /readyz answers whether the database answers: running ``SELECT 1`` is its whole job.
    "server/health.py",
}


SESSION_CALLS = frozenset({"commit", "execute", "scalars", "scalar", "flush"})
ROUTE_DECORATORS = frozenset({"route", "get", "post", "put", "patch", "delete"})


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), _relative(path))


def _registers_routes(tree: ast.Module) -> bool:
    """Tell whether a module registers a Flask route (``@bp.get(...)``, ``add_url_rule``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                func = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(func, ast.Attribute) and func.attr in ROUTE_DECORATORS:
                    return True
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_url_rule"
        ):
            return True
    return False


def view_modules() -> list[str]:
    """Return every view module of the server, as paths from the repository's root."""
    found = set(VIEW_FILES)
    for folder in VIEW_FOLDERS:
        found |= {_relative(p) for p in (ROOT / folder).rglob("*.py")}
    for path in SERVER.rglob("*.py"):
        if "/migrations/" not in _relative(path) and _registers_routes(_tree(path)):
            found.add(_relative(path))
    return sorted(found - NOT_VIEWS)


def violations(source: str, name: str) -> list[str]:
    """Return each place, in order, where a module imports SQLAlchemy or runs SQL itself."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqlalchemy":
                    found.append((node.lineno, f"imports {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] == "sqlalchemy":
                found.append((node.lineno, f"imports from {node.module}"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SESSION_CALLS
        ):
            found.append((node.lineno, f"calls .{node.func.attr}()"))
    return [f"{name}:{line} {what}" for line, what in sorted(found)]


def test_no_view_imports_sqlalchemy_runs_sql_or_commits():
    found = [
        problem
        for module in view_modules()
        for problem in violations((ROOT / module).read_text(encoding="utf-8"), module)
    ]
    assert found == [], "views must call services for queries and commits:\n" + "\n".join(found)


def test_the_views_read_are_the_ones_that_serve_requests():
    modules = view_modules()
    # The three areas: the API, the console's pages, Collect's routes.
    assert "server/api/submissions.py" in modules
    assert "server/web/pages/forms.py" in modules
    assert "server/openrosa/views.py" in modules
    # Route modules outside the view folders are found by what they do.
    assert _registers_routes(_tree(SERVER / "health.py"))


def test_the_check_sees_sql_and_commits():
    """The reader catches each form a query or a commit takes in a view, and nothing else."""
    source = (
        "import sqlalchemy as sa\n"
        "from sqlalchemy.orm import Session\n"
        "from server import db\n"
        "from server.submissions import services\n"
        "def view():\n"
        "    db.session().execute(sa.select(1))\n"
        "    db.session().scalars(sa.select(1))\n"
        "    db.session().commit()\n"
        "    services.current_version(db.session(), {}.get('key'))\n"
    )
    assert violations(source, "view.py") == [
        "view.py:1 imports sqlalchemy",
        "view.py:2 imports from sqlalchemy.orm",
        "view.py:6 calls .execute()",
        "view.py:7 calls .scalars()",
        "view.py:8 calls .commit()",
    ]


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


def test_no_module_reaches_for_another_modules_private_names():
    """Issue 17: a name starting with ``_`` is its module's own; what others need is public."""
    found = []
    for path in sorted(SERVER.rglob("*.py")):
        tree = _tree(path)
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("server"):
                for alias in node.names:
                    # ``_`` is gettext's conventional alias (server/forms/messages.py).
                    if (
                        alias.name.startswith("_")
                        and alias.name not in ("_",)
                        and not (alias.name.startswith("__"))
                    ):
                        found.append(f"{path.relative_to(ROOT)}: imports {alias.name}")
                    imported.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                imported |= {
                    a.asname or a.name.split(".")[0]
                    for a in node.names
                    if a.name.startswith("server")
                }

        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in imported
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
    assert not found, found
