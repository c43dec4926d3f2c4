"""documents with quality checks, progress ticks, and each item's percent complete

Revision ID: d1_documents_progress
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "d1_documents_progress"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("qa_state", sa.String(length=16), nullable=False),
        sa.Column("qa_reason", sa.Text(), nullable=True),
        sa.Column("qa_by_id", sa.Integer(), nullable=True),
        sa.Column("qa_at", sa.DateTime(), nullable=True),
        sa.Column("uploaded_by_id", sa.Integer(), nullable=True),
        sa.Column("uploaded_at", sa.DateTime(), nullable=False),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.Column("replaced_by_id", sa.Integer(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("deleted_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["qa_by_id"], ["users.id"]),
        sa.ForeignKeyConstraint(["uploaded_by_id"], ["users.id"]),
        sa.ForeignKeyConstraint(["replaced_by_id"], ["documents.id"]),
        sa.ForeignKeyConstraint(["deleted_by_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_documents_item_category", "documents", ["item_id", "category", "qa_state", "current"], unique=False
    )
    op.create_index("ix_documents_sha256", "documents", ["sha256"], unique=False)
    op.create_index(
        "ix_documents_category_state", "documents", ["category", "qa_state", "current", "item_id"], unique=False
    )
    op.create_table(
        "progress_ticks",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("qualification", sa.String(length=64), nullable=False),
        sa.Column("criterion", sa.String(length=200), nullable=False),
        sa.Column("evidence", sa.String(length=200), nullable=False),
        sa.Column("on_date", sa.Date(), nullable=False),
        sa.Column("ticked_by_id", sa.Integer(), nullable=True),
        sa.Column("ticked_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["ticked_by_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("item_id", "qualification", "criterion"),
    )
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("progress", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("progress")
    op.drop_table("progress_ticks")
    op.drop_index("ix_documents_category_state", table_name="documents")
    op.drop_index("ix_documents_sha256", table_name="documents")
    op.drop_index("ix_documents_item_category", table_name="documents")
    op.drop_table("documents")
