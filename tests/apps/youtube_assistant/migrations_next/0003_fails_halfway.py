"""a migration that fails halfway (tests: the deploy must restore the database)

Revision ID: 0003
Revises: 0002
Create Date: 2025-11-16

SQLite DDL is not transactional under Alembic: the table below stays behind when
upgrade() raises, as a real half-applied migration would leave it.
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
    raise RuntimeError("0003 fails halfway (test migration)")


def downgrade() -> None:
    op.drop_table("half_done")
