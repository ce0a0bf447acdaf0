"""initial_schema

Revision ID: 001
"""
import sqlalchemy as sa
from alembic import op

revision = "001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("service_metadata", sa.Column("key", sa.String(), primary_key=True), sa.Column("value", sa.Text()))


def downgrade():
    op.drop_table("service_metadata")
