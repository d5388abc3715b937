"""The system roles, with ODK Central's ids, names and verbs.

Ids matter: pyodk assigns app users to forms with ``/assignments/2/<actorId>`` (2 = app-user).
The rows in the ``roles`` table are kept equal to this table by :func:`sync_roles`, which runs
on every start, so adding a verb here is enough.

| role      | who in this programme                          |
|-----------|------------------------------------------------|
| admin     | the technician and programme leads (site-wide) |
| manager   | a coordinator of a project                     |
| viewer    | an analyst: reads and exports                  |
| formfill  | a data collector with a personal account       |
| app-user  | a tablet (device account)                      |
| pub-link  | a public link: fills one form in a browser     |
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from flask_babel import lazy_gettext
from sqlalchemy.orm import Session

from server.auth.models import Role


@dataclass(frozen=True)
class SystemRole:
    id: int
    system: str
    name: str
    verbs: tuple[str, ...]


_READ = (
    "project.read",
    "form.list",
    "form.read",
    "submission.list",
    "submission.read",
    "dataset.list",
    "entity.list",
    "entity.read",
)
_MANAGE = (
    *_READ,
    "project.update",
    "form.create",
    "form.update",
    "form.delete",
    "submission.create",
    "submission.update",
    "submission.delete",
    "field_key.create",
    "field_key.list",
    "field_key.delete",
    "public_link.create",
    "public_link.list",
    "public_link.delete",
    "assignment.list",
    "assignment.create",
    "assignment.delete",
    "dataset.create",
    "dataset.update",
    "entity.create",
    "entity.update",
    "entity.delete",
    "audit.read",
    "project.key",
    "submission.pii",
    "submission.decrypt",
    "export.clean",
)
_ADMIN = (
    *_MANAGE,
    "project.create",
    "project.delete",
    "user.create",
    "user.list",
    "user.read",
    "user.update",
    "user.delete",
    "role.list",
    "config.read",
    "backup.run",
)

SYSTEM_ROLES: tuple[SystemRole, ...] = (
    SystemRole(1, "admin", "Administrator", _ADMIN),
    SystemRole(2, "app-user", "App User", ("form.read", "submission.create")),
    SystemRole(3, "manager", "Project Manager", _MANAGE),
    SystemRole(4, "viewer", "Project Viewer", (*_READ, "export.clean")),
    SystemRole(
        5,
        "formfill",
        "Data Collector",
        ("project.read", "form.list", "form.read", "submission.create"),
    ),
    SystemRole(6, "pub-link", "Public Link", ("form.read", "submission.create")),
)

ROLE_IDS = {role.system: role.id for role in SYSTEM_ROLES}
VERBS_BY_ROLE_ID = {role.id: frozenset(role.verbs) for role in SYSTEM_ROLES}

# What each role is called where people read it (the console, the audit log), by system name.
WORDS = {
    "admin": lazy_gettext("Administrator"),
    "app-user": lazy_gettext("App user (tablet)"),
    "manager": lazy_gettext("Coordinator (manager)"),
    "viewer": lazy_gettext("Analyst (viewer)"),
    "formfill": lazy_gettext("Data collector"),
    "pub-link": lazy_gettext("Public link"),
}


def word(system_or_id: str | int) -> str:
    """Return a role's name in the reader's language, from its system name or its id."""
    system = next((r.system for r in SYSTEM_ROLES if r.id == system_or_id), system_or_id)
    return str(WORDS.get(str(system), system))


def sync_roles(db_session: Session) -> None:
    """Make the roles table hold exactly the system roles above (ids, names, verbs)."""
    existing = {role.id: role for role in db_session.scalars(sa.select(Role))}
    for system_role in SYSTEM_ROLES:
        row = existing.get(system_role.id)
        if row is None:
            db_session.add(
                Role(
                    id=system_role.id,
                    system=system_role.system,
                    name=system_role.name,
                    verbs=list(system_role.verbs),
                )
            )
        elif row.verbs != list(system_role.verbs) or row.name != system_role.name:
            row.verbs = list(system_role.verbs)
            row.name = system_role.name
            row.system = system_role.system
    db_session.commit()
