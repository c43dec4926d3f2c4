"""plugin errors and plugin state

Revision ID: p1_plugins
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "p1_plugins"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plugin_errors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("plugin", sa.String(length=100), nullable=False),
        sa.Column("hook", sa.String(length=100), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_plugin_errors_at", "plugin_errors", ["at"], unique=False)
    op.create_table(
        "plugin_state",
        sa.Column("plugin", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column(
            "value", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("plugin", "key"),
    )


def downgrade() -> None:
    op.drop_table("plugin_state")
    op.drop_index("ix_plugin_errors_at", table_name="plugin_errors")
    op.drop_table("plugin_errors")
