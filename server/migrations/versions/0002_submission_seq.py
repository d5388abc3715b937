"""submissions.seq: a commit-ordered number per form, the key of the API's paging cursors

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Why not the id: on PostgreSQL an id is drawn from its sequence when the row is inserted, not
when it commits, so a record with id 10 can become visible after one with id 11. A client that
paged with "id > 11" would never see 10. ``seq`` is given by a BEFORE INSERT trigger that
takes the next number from the form's row in ``submission_sequences``; that row stays locked
until the inserting transaction commits or rolls back, so the next number is only handed out
once the previous record is visible (PostgreSQL makes a transaction visible before it releases
its locks). Whoever sees number n has therefore seen every committed number below n.

On SQLite one writer at a time holds the database (``BEGIN IMMEDIATE``), so ids already come in
commit order: an AFTER INSERT trigger copies the id into ``seq``.

Caution for later migrations: SQLite's batch mode recreates a table for some changes and the
recreated ``submissions`` would lose its trigger; create it again there (the paging tests fail
on SQLite if ``seq`` stays empty).
"""

from alembic import op
import sqlalchemy as sa
import server.db


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


PG_FUNCTION = """
CREATE FUNCTION merit_submission_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO submission_sequences AS s (form_id, last_seq) VALUES (NEW.form_id, 1)
    ON CONFLICT (form_id) DO UPDATE SET last_seq = s.last_seq + 1
    RETURNING s.last_seq INTO NEW.seq;
    RETURN NEW;
END
$$
"""
PG_TRIGGER = """
CREATE TRIGGER submissions_seq BEFORE INSERT ON submissions
FOR EACH ROW EXECUTE FUNCTION merit_submission_seq()
"""
SQLITE_TRIGGER = """
CREATE TRIGGER submissions_seq AFTER INSERT ON submissions
BEGIN
    UPDATE submissions SET seq = NEW.id WHERE id = NEW.id;
END
"""


def upgrade() -> None:
    op.create_table('submission_sequences',
    sa.Column('form_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['form_id'], ['forms.id'], name=op.f('fk_submission_sequences_form_id_forms'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('form_id', name=op.f('pk_submission_sequences'))
    )
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seq', server.db.BigId, nullable=True))
        batch_op.create_index('ix_submissions_form_id_draft_seq', ['form_id', 'draft', 'seq'], unique=False)

    # Records already there are all committed: their ids are a valid order.
    op.execute("UPDATE submissions SET seq = id")
    op.execute(
        "INSERT INTO submission_sequences (form_id, last_seq) "
        "SELECT form_id, MAX(id) FROM submissions GROUP BY form_id"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS submissions_seq" + (
        " ON submissions" if op.get_bind().dialect.name == "postgresql" else ""
    ))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS merit_submission_seq()")
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_index('ix_submissions_form_id_draft_seq')
        batch_op.drop_column('seq')
    op.drop_table('submission_sequences')
