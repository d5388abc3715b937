"""forms.list_columns: the answers a form's submissions table shows, chosen by a coordinator

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08

The submissions table showed date, instanceID, enumerator, version and state only (issue 19):
a coordinator now picks a few questions whose answers it shows too, kept per form for everyone
who reads that table (personal answers stay hidden from those without the right).
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("forms") as batch:
        batch.add_column(sa.Column("list_columns", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("forms") as batch:
        batch.drop_column("list_columns")
