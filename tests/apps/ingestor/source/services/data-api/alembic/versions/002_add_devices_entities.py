"""add devices and entities tables (stand-in of upstream's 002 at bbc4ab4: the same tables,
columns and indexes; it fails with "table devices already exists" once create_all ran).

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
        *[sa.Column(c, sa.String()) for c in ("manufacturer", "model", "sw_version", "area_id", "integration")],
        sa.Column("last_seen", sa.DateTime()),
        sa.Column("created_at", sa.DateTime()),
    )
    for name, column in (("idx_device_area", "area_id"), ("idx_device_integration", "integration"),
                         ("idx_device_manufacturer", "manufacturer")):
        op.create_index(name, "devices", [column])
    op.create_table(
        "entities",
        sa.Column("entity_id", sa.String(), primary_key=True),
        sa.Column("device_id", sa.String(), sa.ForeignKey("devices.device_id", ondelete="CASCADE")),
        sa.Column("domain", sa.String(), nullable=False),
        *[sa.Column(c, sa.String()) for c in ("platform", "unique_id", "area_id")],
        sa.Column("disabled", sa.Boolean()),
        sa.Column("created_at", sa.DateTime()),
    )
    for name, column in (("idx_entity_device", "device_id"), ("idx_entity_domain", "domain"),
                         ("idx_entity_area", "area_id")):
        op.create_index(name, "entities", [column])


def downgrade():
    op.drop_table("entities")
    op.drop_table("devices")
