"""digest_nonces: the highest nonce count accepted with each Digest nonce in use

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

A captured ``Authorization: Digest`` header was accepted again later (issue 16). Each nonce's
highest accepted ``nc`` is kept here, in the database so that every worker and every server
process agrees, and a header whose ``nc`` is not above it is refused. Rows of expired nonces
are purged as new nonces come into use.
"""

import sqlalchemy as sa
from alembic import op

import server.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "digest_nonces",
        sa.Column("nonce", sa.String(length=100), nullable=False),
        sa.Column("last_nc", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_digest_nonces")),
    )
    op.create_index(
        op.f("ix_digest_nonces_expires_at"), "digest_nonces", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_digest_nonces_expires_at"), table_name="digest_nonces")
    op.drop_table("digest_nonces")
