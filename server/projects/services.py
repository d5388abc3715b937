"""Projects: create, list what an actor may see, rename, archive, delete."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import errors
from server.audit import services as audit
from server.auth.models import Actor, AppUser
from server.db import utcnow
from server.forms.models import Form
from server.projects.models import Project
from server.submissions.models import Submission


def create(
    db_session: Session, name: str, description: str | None = None, *, by: int | None
) -> Project:
    """Create a project (commits)."""
    name = (name or "").strip()
    if not name:
        raise errors.MissingParameter(field="name")
    project = Project(name=name[:255], description=description)
    db_session.add(project)
    db_session.flush()
    audit.record(
        db_session, "project.create", actor_id=by, project_id=project.id, details={"name": name}
    )
    db_session.commit()
    return project


def get(db_session: Session, project_id: int) -> Project:
    """Return a live project or raise 404."""
    project = db_session.get(Project, project_id)
    if project is None or project.deleted_at is not None:
        raise errors.NotFound()
    return project


def visible(
    db_session: Session, project_ids: set[int] | None, *, archived: bool = True
) -> list[Project]:
    """Return the live projects among ``project_ids`` (None: all), by name."""
    query = sa.select(Project).where(Project.deleted_at.is_(None))
    if project_ids is not None:
        query = query.where(Project.id.in_(project_ids or {-1}))
    if not archived:
        query = query.where(Project.archived.is_(False))
    return list(db_session.scalars(query.order_by(Project.archived, Project.name, Project.id)))


def update(
    db_session: Session,
    project: Project,
    *,
    name: str | None = None,
    description: str | None = None,
    archived: bool | None = None,
    by: int | None,
) -> Project:
    """Change a project's name, description or archived flag (commits)."""
    changes: dict[str, object] = {}
    if name is not None:
        if not name.strip():
            raise errors.UnexpectedValue(field="name", reason="a project needs a name")
        project.name = changes["name"] = name.strip()[:255]
    if description is not None:
        project.description = changes["description"] = description
    if archived is not None:
        project.archived = changes["archived"] = archived
    project.updated_at = utcnow()
    audit.record(db_session, "project.update", actor_id=by, project_id=project.id, details=changes)
    db_session.commit()
    return project


def delete(db_session: Session, project: Project, *, by: int | None) -> None:
    """Delete a project (soft: its records stay in the database, out of every list)."""
    project.deleted_at = utcnow()
    audit.record(db_session, "project.delete", actor_id=by, project_id=project.id)
    db_session.commit()


@dataclass(frozen=True)
class ProjectCounts:
    """What Central's extended project metadata shows."""

    forms: int
    app_users: int
    last_submission: object | None


def counts(db_session: Session, project_ids: list[int]) -> dict[int, ProjectCounts]:
    """Return forms, app users and the last submission time of each project, in 3 queries."""
    if not project_ids:
        return {}
    forms = dict(
        db_session.execute(
            sa.select(Form.project_id, sa.func.count())
            .where(Form.project_id.in_(project_ids), Form.deleted_at.is_(None))
            .group_by(Form.project_id)
        ).all()
    )
    app_users = dict(
        db_session.execute(
            sa.select(AppUser.project_id, sa.func.count())
            .join(Actor, Actor.id == AppUser.actor_id)
            .where(AppUser.project_id.in_(project_ids), Actor.deleted_at.is_(None))
            .group_by(AppUser.project_id)
        ).all()
    )
    last = dict(
        db_session.execute(
            sa.select(Form.project_id, sa.func.max(Submission.created_at))
            .join(Submission, Submission.form_id == Form.id)
            .where(Form.project_id.in_(project_ids), Submission.live())
            .group_by(Form.project_id)
        ).all()
    )
    return {
        pid: ProjectCounts(forms.get(pid, 0), app_users.get(pid, 0), last.get(pid))
        for pid in project_ids
    }
