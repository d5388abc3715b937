"""entities from records: versions made by records, conflicts, offline branches, list revisions

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08

Records of forms that declare entities create and update them in their own transaction
(issue 20). An entity version remembers the record version that made it, the tablet's offline
branch, and the conflict it met; an entity carries Central's conflict flag; updates whose
predecessor on their branch has not arrived wait in ``entity_backlog``; a list has a revision
raised by every change of its CSV, the key of the CSV's cached MD5.
"""

import sqlalchemy as sa
from alembic import op

import server.db

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("revision", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("csv_revision", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("csv_md5", sa.String(length=32), nullable=True))
    with op.batch_alter_table("entities") as batch:
        batch.add_column(sa.Column("conflict", sa.String(length=10), nullable=True))
    with op.batch_alter_table("entity_versions") as batch:
        batch.add_column(sa.Column("submission_id", BIG, nullable=True))
        batch.add_column(sa.Column("submission_version_id", BIG, nullable=True))
        batch.add_column(sa.Column("branch_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("trunk_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("branch_base_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("conflict", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("conflicting_properties", sa.JSON(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_entity_versions_submission_id_submissions"),
            "submissions",
            ["submission_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_foreign_key(
            op.f("fk_entity_versions_submission_version_id_submission_versions"),
            "submission_versions",
            ["submission_version_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index(
            op.f("ix_entity_versions_submission_id"), ["submission_id"], unique=False
        )
        batch.create_index(
            "ix_entity_versions_branch",
            ["entity_id", "branch_id", "branch_base_version"],
            unique=False,
        )
    op.create_table(
        "entity_backlog",
        sa.Column("id", BIG, nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("submission_id", BIG, nullable=False),
        sa.Column("submission_version_id", BIG, nullable=False),
        sa.Column("entity_uuid", sa.String(length=64), nullable=False),
        sa.Column("branch_id", sa.String(length=64), nullable=False),
        sa.Column("branch_base_version", sa.Integer(), nullable=False),
        sa.Column("held_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_entity_backlog_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name=op.f("fk_entity_backlog_submission_id_submissions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["submission_version_id"],
            ["submission_versions.id"],
            name=op.f("fk_entity_backlog_submission_version_id_submission_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entity_backlog")),
        sa.UniqueConstraint(
            "submission_version_id",
            "entity_uuid",
            name=op.f("uq_entity_backlog_submission_version_id_entity_uuid"),
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_entity_backlog_branch",
        "entity_backlog",
        ["entity_uuid", "branch_id", "branch_base_version"],
        unique=False,
    )
    op.create_index("ix_entity_backlog_held_at", "entity_backlog", ["held_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_entity_backlog_held_at", table_name="entity_backlog")
    op.drop_index("ix_entity_backlog_branch", table_name="entity_backlog")
    op.drop_table("entity_backlog")
    with op.batch_alter_table("entity_versions") as batch:
        batch.drop_index("ix_entity_versions_branch")
        batch.drop_index(op.f("ix_entity_versions_submission_id"))
        batch.drop_constraint(
            op.f("fk_entity_versions_submission_version_id_submission_versions"),
            type_="foreignkey",
        )
        batch.drop_constraint(
            op.f("fk_entity_versions_submission_id_submissions"), type_="foreignkey"
        )
        for column in (
            "conflicting_properties",
            "conflict",
            "branch_base_version",
            "trunk_version",
            "branch_id",
            "submission_version_id",
            "submission_id",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("entities") as batch:
        batch.drop_column("conflict")
    with op.batch_alter_table("datasets") as batch:
        for column in ("csv_md5", "csv_revision", "revision"):
            batch.drop_column(column)
