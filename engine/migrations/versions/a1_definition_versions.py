"""tracker types kept in the database: versions, drafts and the audit log of publishes

Revision ID: a1_definition_versions
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "a1_definition_versions"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "type_definitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("type_key", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("schema_json", sa.Text(), nullable=False),
        sa.Column("type_yaml", sa.Text(), nullable=False),
        sa.Column("workflow_yaml", sa.Text(), nullable=False),
        sa.Column("roles_yaml", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("type_key", "version", name="uq_type_definitions_version"),
    )
    op.create_table(
        "definition_publishes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("type_key", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("diff", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_definition_publishes_type", "definition_publishes", ["type_key", "version"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_definition_publishes_type", table_name="definition_publishes")
    op.drop_table("definition_publishes")
    op.drop_table("type_definitions")
