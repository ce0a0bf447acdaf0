"""Initial schema (stand-in of upstream's 001 at bbc4ab4: an empty revision).

Revision ID: 001
"""
revision = "001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
