"""add_devices_entities

Revision ID: 002
Revises: 001
"""
import sqlalchemy as sa
from alembic import op

revision = "002"
down_revision = "001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("manufacturer", sa.String()),
        sa.Column("model", sa.String()),
        sa.Column("sw_version", sa.String()),
        sa.Column("area_id", sa.String()),
    )
    op.create_table(
        "entities",
        sa.Column("entity_id", sa.String(), primary_key=True),
        sa.Column("device_id", sa.String(), sa.ForeignKey("devices.device_id")),
        sa.Column("domain", sa.String(), nullable=False),
        sa.Column("platform", sa.String()),
        sa.Column("area_id", sa.String()),
    )
    op.create_index("ix_entities_device_id", "entities", ["device_id"])


def downgrade():
    op.drop_table("entities")
    op.drop_table("devices")
