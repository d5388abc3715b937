"""form_versions.source_hash: the MD5 of the XForm as compiled from the upload

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

``hash`` is the MD5 of the bytes served to tablets, which may include what the server added
(a managed encryption key and its version suffix). Deciding whether a form in ``forms/`` is
already published must compare what was uploaded, not what is served; otherwise every start
would publish a new version of each form of a project with managed encryption.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("form_versions", sa.Column("source_hash", sa.String(length=32), nullable=True))
    op.execute("UPDATE form_versions SET source_hash = hash")


def downgrade() -> None:
    with op.batch_alter_table("form_versions") as batch_op:
        batch_op.drop_column("source_hash")
