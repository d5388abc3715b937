"""conflicts a coordinator can settle, and files dropped from a record counted

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08

Issue 19, items 1 and 9. ``submission_conflicts`` gains what settling a conflict needs: whether
it is a draft's test record, the form version its payload names, how it was settled, by whom,
the version it became; its files (``submission_conflict_files``), which intake had made durable
and catalogued but pointed at from nowhere. Versions and conflicts count the files sent for no
question of the form (``attachments_dropped``) and keep their cleaned names.
"""

import sqlalchemy as sa
from alembic import op

import server.db

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submission_conflicts") as batch_op:
        batch_op.add_column(
            sa.Column("draft", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("form_version_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("resolution", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("resolved_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("version_id", server.db.BigId, nullable=True))
        batch_op.add_column(
            sa.Column("attachments_dropped", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("dropped_names", server.db.JSONDocument, nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_submission_conflicts_form_version_id_form_versions"),
            "form_versions",
            ["form_version_id"],
            ["id"],
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_submission_conflicts_resolved_by_actors"),
            "actors",
            ["resolved_by"],
            ["id"],
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_submission_conflicts_version_id_submission_versions"),
            "submission_versions",
            ["version_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_check_constraint(
            "resolution",
            "resolution IS NULL OR resolution IN ('keepFirst', 'takeSecond', 'discard')",
        )
        batch_op.create_index(
            "ix_submission_conflicts_form_id_resolved_at", ["form_id", "resolved_at"]
        )
    # Conflicts kept before this revision were never shown to anyone: they wait to be settled.
    op.create_table(
        "submission_conflict_files",
        sa.Column("id", server.db.BigId, nullable=False),
        sa.Column("conflict_id", server.db.BigId, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("blob_id", server.db.BigId, nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["blob_id"], ["blobs.id"], name=op.f("fk_submission_conflict_files_blob_id_blobs")
        ),
        sa.ForeignKeyConstraint(
            ["conflict_id"],
            ["submission_conflicts.id"],
            name=op.f("fk_submission_conflict_files_conflict_id_submission_conflicts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submission_conflict_files")),
        sa.UniqueConstraint(
            "conflict_id", "name", name=op.f("uq_submission_conflict_files_conflict_id_name")
        ),
    )
    op.create_index(
        op.f("ix_submission_conflict_files_blob_id"),
        "submission_conflict_files",
        ["blob_id"],
        unique=False,
    )
    op.add_column(
        "submission_versions",
        sa.Column("attachments_dropped", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "submission_versions", sa.Column("dropped_names", server.db.JSONDocument, nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("submission_versions") as batch_op:
        batch_op.drop_column("dropped_names")
        batch_op.drop_column("attachments_dropped")
    op.drop_index(
        op.f("ix_submission_conflict_files_blob_id"), table_name="submission_conflict_files"
    )
    op.drop_table("submission_conflict_files")
    with op.batch_alter_table("submission_conflicts") as batch_op:
        batch_op.drop_index("ix_submission_conflicts_form_id_resolved_at")
        batch_op.drop_constraint(batch_op.f("ck_submission_conflicts_resolution"), type_="check")
        batch_op.drop_constraint(
            "fk_submission_conflicts_version_id_submission_versions", type_="foreignkey"
        )
        batch_op.drop_constraint("fk_submission_conflicts_resolved_by_actors", type_="foreignkey")
        batch_op.drop_constraint(
            "fk_submission_conflicts_form_version_id_form_versions", type_="foreignkey"
        )
        for name in (
            "dropped_names",
            "attachments_dropped",
            "version_id",
            "resolved_by",
            "resolution",
            "draft",
            "form_version_id",
        ):
            batch_op.drop_column(name)
