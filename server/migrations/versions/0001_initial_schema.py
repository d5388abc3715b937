"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-24
"""

from alembic import op
import sqlalchemy as sa
import server.db

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('actors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=20), nullable=False),
    sa.Column('display_name', sa.String(length=255), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("type IN ('user', 'field_key', 'public_link')", name=op.f('ck_actors_type')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_actors'))
    )
    op.create_table('blobs',
    sa.Column('id', server.db.BigId, nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('md5', sa.String(length=32), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_blobs')),
    sa.UniqueConstraint('sha256', name=op.f('uq_blobs_sha256'))
    )
    op.create_table('login_throttle',
    sa.Column('key', sa.String(length=400), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('first_failure_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('locked_until', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_login_throttle'))
    )
    op.create_table('project_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public', sa.Text(), nullable=False),
    sa.Column('private', sa.JSON(), nullable=True),
    sa.Column('managed', sa.Boolean(), nullable=False),
    sa.Column('hint', sa.Text(), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_project_keys'))
    )
    op.create_table('roles',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('system', sa.String(length=20), nullable=True),
    sa.Column('verbs', sa.JSON(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_roles')),
    sa.UniqueConstraint('system', name=op.f('uq_roles_system'))
    )
    op.create_table('auth_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('csrf', sa.String(length=64), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['actors.id'], name=op.f('fk_auth_sessions_actor_id_actors'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_auth_sessions')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_auth_sessions_token_hash'))
    )
    with op.batch_alter_table('auth_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_auth_sessions_actor_id'), ['actor_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_auth_sessions_expires_at'), ['expires_at'], unique=False)

    op.create_table('projects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('archived', sa.Boolean(), nullable=False),
    sa.Column('key_id', sa.Integer(), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['key_id'], ['project_keys.id'], name=op.f('fk_projects_key_id_project_keys')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_projects'))
    )
    op.create_table('users',
    sa.Column('actor_id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=True),
    sa.Column('digest_ha1', sa.String(length=32), nullable=True),
    sa.Column('language', sa.String(length=8), nullable=True),
    sa.Column('password_changed_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['actors.id'], name=op.f('fk_users_actor_id_actors'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('actor_id', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email'))
    )
    op.create_table('app_users',
    sa.Column('actor_id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=True),
    sa.Column('token_sealed', sa.Text(), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('revoked_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['actors.id'], name=op.f('fk_app_users_actor_id_actors'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['created_by'], ['actors.id'], name=op.f('fk_app_users_created_by_actors')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_app_users_project_id_projects')),
    sa.PrimaryKeyConstraint('actor_id', name=op.f('pk_app_users')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_app_users_token_hash'))
    )
    with op.batch_alter_table('app_users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_app_users_project_id'), ['project_id'], unique=False)

    op.create_table('datasets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('approval_required', sa.Boolean(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('published_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_datasets_project_id_projects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets')),
    sa.UniqueConstraint('project_id', 'name', name=op.f('uq_datasets_project_id_name'))
    )
    op.create_table('forms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('xml_form_id', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('current_version_id', sa.Integer(), nullable=True),
    sa.Column('draft_version_id', sa.Integer(), nullable=True),
    sa.Column('key_id', sa.Integer(), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("state IN ('open', 'closing', 'closed')", name=op.f('ck_forms_state')),
    sa.ForeignKeyConstraint(['created_by'], ['actors.id'], name=op.f('fk_forms_created_by_actors')),
    sa.ForeignKeyConstraint(['current_version_id'], ['form_versions.id'], name='fk_forms_current_version', use_alter=True),
    sa.ForeignKeyConstraint(['draft_version_id'], ['form_versions.id'], name='fk_forms_draft_version', use_alter=True),
    sa.ForeignKeyConstraint(['key_id'], ['project_keys.id'], name=op.f('fk_forms_key_id_project_keys')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_forms_project_id_projects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_forms')),
    sa.UniqueConstraint('project_id', 'xml_form_id', name=op.f('uq_forms_project_id_xml_form_id'))
    )
    op.create_table('assignments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=False),
    sa.Column('role_id', sa.Integer(), nullable=False),
    sa.Column('actee', sa.String(length=40), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=True),
    sa.Column('form_id', sa.Integer(), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['actors.id'], name=op.f('fk_assignments_actor_id_actors'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['form_id'], ['forms.id'], name=op.f('fk_assignments_form_id_forms'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_assignments_project_id_projects'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['role_id'], ['roles.id'], name=op.f('fk_assignments_role_id_roles')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assignments')),
    sa.UniqueConstraint('actor_id', 'role_id', 'actee', name=op.f('uq_assignments_actor_id_role_id_actee'))
    )
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assignments_actor_id'), ['actor_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_assignments_form_id'), ['form_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_assignments_project_id'), ['project_id'], unique=False)

    op.create_table('dataset_properties',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('published_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_dataset_properties_dataset_id_datasets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dataset_properties')),
    sa.UniqueConstraint('dataset_id', 'name', name=op.f('uq_dataset_properties_dataset_id_name'))
    )
    op.create_table('entities',
    sa.Column('id', server.db.BigId, nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=64), nullable=False),
    sa.Column('creator_id', sa.Integer(), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['creator_id'], ['actors.id'], name=op.f('fk_entities_creator_id_actors')),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_entities_dataset_id_datasets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_entities')),
    sa.UniqueConstraint('dataset_id', 'uuid', name=op.f('uq_entities_dataset_id_uuid')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('entities', schema=None) as batch_op:
        batch_op.create_index('ix_entities_dataset_id_id', ['dataset_id', 'id'], unique=False)

    op.create_table('form_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('form_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(length=255), nullable=False),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('xml', sa.Text(), nullable=False),
    sa.Column('hash', sa.String(length=32), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('schema', server.db.JSONDocument, nullable=False),
    sa.Column('xls_blob_id', server.db.BigId, nullable=True),
    sa.Column('xls_filename', sa.String(length=255), nullable=True),
    sa.Column('xls_content_type', sa.String(length=255), nullable=True),
    sa.Column('validation', sa.String(length=10), nullable=False),
    sa.Column('validation_messages', sa.JSON(), nullable=False),
    sa.Column('warnings', sa.JSON(), nullable=False),
    sa.Column('key_id', sa.Integer(), nullable=True),
    sa.Column('draft_token', sa.String(length=64), nullable=True),
    sa.Column('enketo_id', sa.String(length=64), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('published_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['actors.id'], name=op.f('fk_form_versions_created_by_actors')),
    sa.ForeignKeyConstraint(['form_id'], ['forms.id'], name=op.f('fk_form_versions_form_id_forms'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['key_id'], ['project_keys.id'], name=op.f('fk_form_versions_key_id_project_keys')),
    sa.ForeignKeyConstraint(['xls_blob_id'], ['blobs.id'], name=op.f('fk_form_versions_xls_blob_id_blobs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_form_versions')),
    sa.UniqueConstraint('draft_token', name=op.f('uq_form_versions_draft_token'))
    )
    with op.batch_alter_table('form_versions', schema=None) as batch_op:
        batch_op.create_index('ix_form_versions_form_id_version', ['form_id', 'version'], unique=False)
        batch_op.create_index('uq_form_versions_published_version', ['form_id', 'version'], unique=True, sqlite_where=sa.text('published_at IS NOT NULL'), postgresql_where=sa.text('published_at IS NOT NULL'))

    if op.get_bind().dialect.name != "sqlite":
        # forms <-> form_versions refer to each other; SQLite accepts both in CREATE TABLE,
        # PostgreSQL needs the second direction added once both tables exist.
        op.create_foreign_key('fk_forms_current_version', 'forms', 'form_versions',
                              ['current_version_id'], ['id'])
        op.create_foreign_key('fk_forms_draft_version', 'forms', 'form_versions',
                              ['draft_version_id'], ['id'])
    op.create_table('submission_conflicts',
    sa.Column('id', server.db.BigId, nullable=False),
    sa.Column('form_id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.String(length=255), nullable=False),
    sa.Column('xml', sa.Text(), nullable=False),
    sa.Column('xml_sha256', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=40), nullable=False),
    sa.Column('submitter_id', sa.Integer(), nullable=True),
    sa.Column('device_id', sa.String(length=255), nullable=True),
    sa.Column('user_agent', sa.String(length=255), nullable=True),
    sa.Column('received_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['form_id'], ['forms.id'], name=op.f('fk_submission_conflicts_form_id_forms'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['submitter_id'], ['actors.id'], name=op.f('fk_submission_conflicts_submitter_id_actors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_submission_conflicts')),
    sa.UniqueConstraint('form_id', 'instance_id', 'xml_sha256', name=op.f('uq_submission_conflicts_form_id_instance_id_xml_sha256'))
    )
    op.create_table('submissions',
    sa.Column('id', server.db.BigId, nullable=False),
    sa.Column('form_id', sa.Integer(), nullable=False),
    sa.Column('draft', sa.Boolean(), nullable=False),
    sa.Column('instance_id', sa.String(length=255), nullable=False),
    sa.Column('review_state', sa.String(length=20), nullable=True),
    sa.Column('submitter_id', sa.Integer(), nullable=True),
    sa.Column('device_id', sa.String(length=255), nullable=True),
    sa.Column('user_agent', sa.String(length=255), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("review_state IS NULL OR review_state IN ('hasIssues', 'edited', 'approved', 'rejected')", name=op.f('ck_submissions_review_state')),
    sa.ForeignKeyConstraint(['form_id'], ['forms.id'], name=op.f('fk_submissions_form_id_forms'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['submitter_id'], ['actors.id'], name=op.f('fk_submissions_submitter_id_actors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_submissions')),
    sa.UniqueConstraint('form_id', 'draft', 'instance_id', name=op.f('uq_submissions_form_id_draft_instance_id')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.create_index('ix_submissions_form_id_created_at', ['form_id', 'created_at'], unique=False)
        batch_op.create_index('ix_submissions_form_id_draft_id', ['form_id', 'draft', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_submissions_submitter_id'), ['submitter_id'], unique=False)

    op.create_table('audit_events',
    sa.Column('id', server.db.BigId, nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=True),
    sa.Column('form_id', sa.Integer(), nullable=True),
    sa.Column('submission_id', server.db.BigId, nullable=True),
    sa.Column('entity_id', server.db.BigId, nullable=True),
    sa.Column('details', server.db.JSONDocument, nullable=True),
    sa.Column('logged_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['actors.id'], name=op.f('fk_audit_events_actor_id_actors')),
    sa.ForeignKeyConstraint(['entity_id'], ['entities.id'], name=op.f('fk_audit_events_entity_id_entities'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['form_id'], ['forms.id'], name=op.f('fk_audit_events_form_id_forms'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_audit_events_project_id_projects')),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_audit_events_submission_id_submissions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_action_logged_at', ['action', 'logged_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_actor_id'), ['actor_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_logged_at'), ['logged_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_submission_id'), ['submission_id'], unique=False)

    op.create_table('comments',
    sa.Column('id', server.db.BigId, nullable=False),
    sa.Column('submission_id', server.db.BigId, nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['actors.id'], name=op.f('fk_comments_actor_id_actors')),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_comments_submission_id_submissions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_comments'))
    )
    with op.batch_alter_table('comments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_comments_submission_id'), ['submission_id'], unique=False)

    op.create_table('corrections',
    sa.Column('id', server.db.BigId, nullable=False),
    sa.Column('form_id', sa.Integer(), nullable=False),
    sa.Column('submission_id', server.db.BigId, nullable=False),
    sa.Column('key', sa.String(length=512), nullable=False),
    sa.Column('column', sa.String(length=512), nullable=False),
    sa.Column('old_value', sa.Text(), nullable=True),
    sa.Column('new_value', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('batch', sa.String(length=64), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['actors.id'], name=op.f('fk_corrections_actor_id_actors')),
    sa.ForeignKeyConstraint(['form_id'], ['forms.id'], name=op.f('fk_corrections_form_id_forms'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_corrections_submission_id_submissions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_corrections'))
    )
    with op.batch_alter_table('corrections', schema=None) as batch_op:
        batch_op.create_index('ix_corrections_form_id_key', ['form_id', 'key'], unique=False)

    op.create_table('entity_versions',
    sa.Column('id', server.db.BigId, nullable=False),
    sa.Column('entity_id', server.db.BigId, nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('base_version', sa.Integer(), nullable=True),
    sa.Column('current', sa.Boolean(), nullable=False),
    sa.Column('label', sa.Text(), nullable=False),
    sa.Column('data', server.db.JSONDocument, nullable=False),
    sa.Column('creator_id', sa.Integer(), nullable=True),
    sa.Column('user_agent', sa.String(length=255), nullable=True),
    sa.Column('source', sa.JSON(), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['creator_id'], ['actors.id'], name=op.f('fk_entity_versions_creator_id_actors')),
    sa.ForeignKeyConstraint(['entity_id'], ['entities.id'], name=op.f('fk_entity_versions_entity_id_entities'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_entity_versions')),
    sa.UniqueConstraint('entity_id', 'version', name=op.f('uq_entity_versions_entity_id_version'))
    )
    with op.batch_alter_table('entity_versions', schema=None) as batch_op:
        batch_op.create_index('uq_entity_versions_current', ['entity_id'], unique=True, sqlite_where=sa.text('current'), postgresql_where=sa.text('current'))

    op.create_table('form_attachments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('form_id', sa.Integer(), nullable=False),
    sa.Column('form_version_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=10), nullable=False),
    sa.Column('blob_id', server.db.BigId, nullable=True),
    sa.Column('content_type', sa.String(length=255), nullable=True),
    sa.Column('dataset_id', sa.Integer(), nullable=True),
    sa.Column('updated_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['blob_id'], ['blobs.id'], name=op.f('fk_form_attachments_blob_id_blobs')),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_form_attachments_dataset_id_datasets')),
    sa.ForeignKeyConstraint(['form_id'], ['forms.id'], name=op.f('fk_form_attachments_form_id_forms'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['form_version_id'], ['form_versions.id'], name=op.f('fk_form_attachments_form_version_id_form_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_form_attachments')),
    sa.UniqueConstraint('form_version_id', 'name', name=op.f('uq_form_attachments_form_version_id_name'))
    )
    with op.batch_alter_table('form_attachments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_form_attachments_blob_id'), ['blob_id'], unique=False)

    op.create_table('submission_versions',
    sa.Column('id', server.db.BigId, nullable=False),
    sa.Column('submission_id', server.db.BigId, nullable=False),
    sa.Column('form_id', sa.Integer(), nullable=False),
    sa.Column('draft', sa.Boolean(), nullable=False),
    sa.Column('form_version_id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.String(length=255), nullable=False),
    sa.Column('deprecated_id', sa.String(length=255), nullable=True),
    sa.Column('current', sa.Boolean(), nullable=False),
    sa.Column('xml', sa.Text(), nullable=False),
    sa.Column('xml_sha256', sa.String(length=64), nullable=False),
    sa.Column('document', server.db.JSONDocument, nullable=True),
    sa.Column('instance_name', sa.Text(), nullable=True),
    sa.Column('submitter_id', sa.Integer(), nullable=True),
    sa.Column('device_id', sa.String(length=255), nullable=True),
    sa.Column('user_agent', sa.String(length=255), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('attachments_expected', sa.Integer(), nullable=False),
    sa.Column('attachments_present', sa.Integer(), nullable=False),
    sa.Column('encrypted', sa.Boolean(), nullable=False),
    sa.Column('encrypted_key', sa.Text(), nullable=True),
    sa.Column('encrypted_signature', sa.Text(), nullable=True),
    sa.Column('encrypted_xml_name', sa.String(length=255), nullable=True),
    sa.ForeignKeyConstraint(['form_id'], ['forms.id'], name=op.f('fk_submission_versions_form_id_forms'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['form_version_id'], ['form_versions.id'], name=op.f('fk_submission_versions_form_version_id_form_versions')),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_submission_versions_submission_id_submissions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['submitter_id'], ['actors.id'], name=op.f('fk_submission_versions_submitter_id_actors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_submission_versions')),
    sa.UniqueConstraint('form_id', 'draft', 'instance_id', name=op.f('uq_submission_versions_form_id_draft_instance_id')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('submission_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_submission_versions_form_version_id'), ['form_version_id'], unique=False)
        batch_op.create_index('ix_submission_versions_submission_id', ['submission_id'], unique=False)
        batch_op.create_index('uq_submission_versions_current', ['submission_id'], unique=True, sqlite_where=sa.text('current'), postgresql_where=sa.text('current'))

    op.create_table('submission_attachments',
    sa.Column('id', server.db.BigId, nullable=False),
    sa.Column('submission_version_id', server.db.BigId, nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('blob_id', server.db.BigId, nullable=True),
    sa.Column('content_type', sa.String(length=255), nullable=True),
    sa.Column('is_client_audit', sa.Boolean(), nullable=False),
    sa.Column('encryption_index', sa.Integer(), nullable=True),
    sa.Column('updated_at', server.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['blob_id'], ['blobs.id'], name=op.f('fk_submission_attachments_blob_id_blobs')),
    sa.ForeignKeyConstraint(['submission_version_id'], ['submission_versions.id'], name=op.f('fk_submission_attachments_submission_version_id_submission_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_submission_attachments')),
    sa.UniqueConstraint('submission_version_id', 'name', name=op.f('uq_submission_attachments_submission_version_id_name'))
    )
    with op.batch_alter_table('submission_attachments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_submission_attachments_blob_id'), ['blob_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('submission_attachments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_submission_attachments_blob_id'))

    op.drop_table('submission_attachments')
    with op.batch_alter_table('submission_versions', schema=None) as batch_op:
        batch_op.drop_index('uq_submission_versions_current', sqlite_where=sa.text('current'), postgresql_where=sa.text('current'))
        batch_op.drop_index('ix_submission_versions_submission_id')
        batch_op.drop_index(batch_op.f('ix_submission_versions_form_version_id'))

    op.drop_table('submission_versions')
    with op.batch_alter_table('form_attachments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_form_attachments_blob_id'))

    op.drop_table('form_attachments')
    with op.batch_alter_table('entity_versions', schema=None) as batch_op:
        batch_op.drop_index('uq_entity_versions_current', sqlite_where=sa.text('current'), postgresql_where=sa.text('current'))

    op.drop_table('entity_versions')
    with op.batch_alter_table('corrections', schema=None) as batch_op:
        batch_op.drop_index('ix_corrections_form_id_key')

    op.drop_table('corrections')
    with op.batch_alter_table('comments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_comments_submission_id'))

    op.drop_table('comments')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_submission_id'))
        batch_op.drop_index(batch_op.f('ix_audit_events_project_id'))
        batch_op.drop_index(batch_op.f('ix_audit_events_logged_at'))
        batch_op.drop_index(batch_op.f('ix_audit_events_actor_id'))
        batch_op.drop_index('ix_audit_events_action_logged_at')

    op.drop_table('audit_events')
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_submissions_submitter_id'))
        batch_op.drop_index('ix_submissions_form_id_draft_id')
        batch_op.drop_index('ix_submissions_form_id_created_at')

    op.drop_table('submissions')
    op.drop_table('submission_conflicts')
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint('fk_forms_current_version', 'forms', type_='foreignkey')
        op.drop_constraint('fk_forms_draft_version', 'forms', type_='foreignkey')
    with op.batch_alter_table('form_versions', schema=None) as batch_op:
        batch_op.drop_index('uq_form_versions_published_version', sqlite_where=sa.text('published_at IS NOT NULL'), postgresql_where=sa.text('published_at IS NOT NULL'))
        batch_op.drop_index('ix_form_versions_form_id_version')

    op.drop_table('form_versions')
    with op.batch_alter_table('entities', schema=None) as batch_op:
        batch_op.drop_index('ix_entities_dataset_id_id')

    op.drop_table('entities')
    op.drop_table('dataset_properties')
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_assignments_project_id'))
        batch_op.drop_index(batch_op.f('ix_assignments_form_id'))
        batch_op.drop_index(batch_op.f('ix_assignments_actor_id'))

    op.drop_table('assignments')
    op.drop_table('forms')
    op.drop_table('datasets')
    with op.batch_alter_table('app_users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_app_users_project_id'))

    op.drop_table('app_users')
    op.drop_table('users')
    op.drop_table('projects')
    with op.batch_alter_table('auth_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_auth_sessions_expires_at'))
        batch_op.drop_index(batch_op.f('ix_auth_sessions_actor_id'))

    op.drop_table('auth_sessions')
    op.drop_table('roles')
    op.drop_table('project_keys')
    op.drop_table('login_throttle')
    op.drop_table('blobs')
    op.drop_table('actors')

