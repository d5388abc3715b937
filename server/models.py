"""Every model, imported in one place so that the metadata (and Alembic) sees all tables."""

from server.audit.models import AuditEvent
from server.auth.models import (
    Actor,
    AppUser,
    Assignment,
    AuthSession,
    DigestNonce,
    LoginThrottle,
    Role,
    User,
)
from server.db import Base
from server.entities.models import Dataset, DatasetProperty, Entity, EntityVersion
from server.exports.models import Correction
from server.forms.models import Form, FormAttachment, FormVersion
from server.projects.models import Project, ProjectKey
from server.storage.models import Blob
from server.submissions.models import (
    Comment,
    Submission,
    SubmissionAttachment,
    SubmissionConflict,
    SubmissionConflictFile,
    SubmissionVersion,
)

__all__ = [
    "Actor",
    "AppUser",
    "Assignment",
    "AuditEvent",
    "AuthSession",
    "Base",
    "Blob",
    "Comment",
    "Correction",
    "Dataset",
    "DatasetProperty",
    "DigestNonce",
    "Entity",
    "EntityVersion",
    "Form",
    "FormAttachment",
    "FormVersion",
    "LoginThrottle",
    "Project",
    "ProjectKey",
    "Role",
    "Submission",
    "SubmissionAttachment",
    "SubmissionConflict",
    "SubmissionConflictFile",
    "SubmissionVersion",
    "User",
]
