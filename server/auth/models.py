"""Actors (web users, app users), their sessions, roles and role assignments.

As in ODK Central, everyone who can act is an *actor*; a web user and an app user (a device
account) are actors with a row of their own. Roles are named sets of verbs; an assignment gives
an actor a role over the whole site, one project or one form.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.db import Base, UTCDateTime, utcnow

ACTOR_TYPES = ("user", "field_key", "public_link")


class Actor(Base):
    """Someone or something that can act: a web user or an app user."""

    __tablename__ = "actors"

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(sa.String(20))
    display_name: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, onupdate=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (sa.CheckConstraint(f"type IN {ACTOR_TYPES!r}", name="type"),)


class User(Base):
    """A web user: coordinator, analyst, administrator. The password is kept as a hash only."""

    __tablename__ = "users"

    actor_id: Mapped[int] = mapped_column(
        sa.ForeignKey("actors.id", ondelete="CASCADE"), primary_key=True
    )
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    # MD5(email:realm:password) for HTTP Digest, which ODK Collect speaks; never the password.
    digest_ha1: Mapped[str | None] = mapped_column(sa.String(32))
    language: Mapped[str | None] = mapped_column(sa.String(8))
    password_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    actor: Mapped[Actor] = relationship(lazy="joined")


class AppUser(Base):
    """A device account of one project: ODK Collect authenticates with its URL token."""

    __tablename__ = "app_users"

    actor_id: Mapped[int] = mapped_column(
        sa.ForeignKey("actors.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id"), index=True)
    # The token is looked up by its SHA-256; the token itself is kept sealed (encrypted under
    # the server's secret) only so that the console can show its QR code again.
    token_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    token_sealed: Mapped[str | None] = mapped_column(sa.Text)
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("actors.id"))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    actor: Mapped[Actor] = relationship(lazy="joined", foreign_keys=[actor_id])


class PublicLink(Base):
    """A link anyone holding it may use to fill one form in a browser, without an account.

    As ODK Central's public links: an actor of type ``public_link`` holding the ``pub-link``
    role on the form, authenticated by a token (kept as its hash, and sealed so that the
    console can show the link again). ``once`` asks the browser page to take one record only
    per browser, as Central's single-submission links. Revoking clears the token at once.
    """

    __tablename__ = "public_links"

    actor_id: Mapped[int] = mapped_column(
        sa.ForeignKey("actors.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id"), index=True)
    form_id: Mapped[int] = mapped_column(sa.ForeignKey("forms.id", ondelete="CASCADE"), index=True)
    once: Mapped[bool] = mapped_column(default=False)
    token_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    token_sealed: Mapped[str | None] = mapped_column(sa.Text)
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("actors.id"))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    actor: Mapped[Actor] = relationship(lazy="joined", foreign_keys=[actor_id])


class AuthSession(Base):
    """A console session or an API bearer token, found by the SHA-256 of its secret."""

    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    actor_id: Mapped[int] = mapped_column(
        sa.ForeignKey("actors.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(sa.String(10), default="bearer")
    csrf: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)


class LoginThrottle(Base):
    """Failed logins per account (or per address), shared by every server process."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(sa.String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    first_failure_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class DigestNonce(Base):
    """A Digest nonce in use and the highest nonce count (``nc``) accepted with it.

    A header is accepted once: its ``nc`` must be above every one seen for its nonce, in every
    server process (RFC 7616 §3.4; issue 16). Rows are useless once the nonce has expired and
    are purged then.
    """

    __tablename__ = "digest_nonces"

    nonce: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    last_nc: Mapped[int] = mapped_column(sa.BigInteger)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)


class Role(Base):
    """A named set of verbs. System roles carry ODK Central's names and ids."""

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(100))
    system: Mapped[str | None] = mapped_column(sa.String(20), unique=True)
    verbs: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Assignment(Base):
    """An actor holds a role over the site (``*``), a project or a form."""

    __tablename__ = "assignments"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_id: Mapped[int] = mapped_column(
        sa.ForeignKey("actors.id", ondelete="CASCADE"), index=True
    )
    role_id: Mapped[int] = mapped_column(sa.ForeignKey("roles.id"))
    # "*" for the whole site, "project:<id>" or "form:<id>"; the ids are repeated below so
    # that deleting a project or form can find its assignments.
    actee: Mapped[str] = mapped_column(sa.String(40))
    project_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    form_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("forms.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (sa.UniqueConstraint("actor_id", "role_id", "actee"),)
