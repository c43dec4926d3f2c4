"""process automation runs and round-robin assignment cursors

Revision ID: a2_automation
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "a2_automation"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "automation_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("automation_id", sa.Integer(), nullable=False),
        sa.Column("trigger_key", sa.String(length=200), nullable=False),
        sa.Column("target_key", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["automation_id"], ["items.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["result_id"], ["items.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("automation_id", "trigger_key", "target_key", name="uq_automation_runs_key"),
    )
    op.create_index(
        "ix_automation_runs_result", "automation_runs", ["automation_id", "target_key", "result_id"], unique=False
    )
    op.create_table(
        "assignment_cursors",
        sa.Column("type_key", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("type_key", "role"),
    )


def downgrade() -> None:
    op.drop_table("assignment_cursors")
    op.drop_index("ix_automation_runs_result", table_name="automation_runs")
    op.drop_table("automation_runs")
