"""public_links: links that let anyone holding them fill one form in a browser

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08

As ODK Central's public links (issue 18, item 4): an actor of type ``public_link`` (already
allowed by ``actors.type``) holding the ``pub-link`` role on one form, found by the SHA-256 of
its token; the token itself is kept sealed under the server's secret so that the console can
show the link again. Revoking clears both.
"""

import sqlalchemy as sa
from alembic import op

import server.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "public_links",
        sa.Column("actor_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("form_id", sa.Integer(), nullable=False),
        sa.Column("once", sa.Boolean(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("token_sealed", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("revoked_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["actors.id"],
            name=op.f("fk_public_links_actor_id_actors"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["actors.id"], name=op.f("fk_public_links_created_by_actors")
        ),
        sa.ForeignKeyConstraint(
            ["form_id"],
            ["forms.id"],
            name=op.f("fk_public_links_form_id_forms"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_public_links_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("actor_id", name=op.f("pk_public_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_public_links_token_hash")),
    )
    with op.batch_alter_table("public_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_public_links_project_id"), ["project_id"])
        batch_op.create_index(batch_op.f("ix_public_links_form_id"), ["form_id"])


def downgrade() -> None:
    with op.batch_alter_table("public_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_public_links_form_id"))
        batch_op.drop_index(batch_op.f("ix_public_links_project_id"))
    op.drop_table("public_links")
