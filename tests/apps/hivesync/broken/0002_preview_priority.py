"""The broken release's migration (rollback test): a column the previous release lacks.

Revision ID: 0002_preview_priority
Revises: 0001_initial
"""
import sqlalchemy as sa
from alembic import op

revision = "0002_preview_priority"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("preview_jobs", sa.Column("priority", sa.Integer, server_default="0"))


def downgrade() -> None:
    op.drop_column("preview_jobs", "priority")
