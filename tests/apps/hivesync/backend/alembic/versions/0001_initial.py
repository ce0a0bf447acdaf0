"""Initial schema: every table the plan's N.7.2 names.

Revision ID: 0001_initial
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def _id():
    return sa.Column("id", sa.Integer, primary_key=True)


def _created():
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table("users", _id(), sa.Column("email", sa.String(320), nullable=False, unique=True),
                    sa.Column("password_hash", sa.String(255)), _created())
    op.create_table("teams", _id(), sa.Column("name", sa.String(200), nullable=False), _created())
    op.create_table("projects", _id(), sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id")),
                    sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id")),
                    sa.Column("name", sa.String(200), nullable=False), _created())
    op.create_table("tasks", _id(), sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id")),
                    sa.Column("title", sa.String(500), nullable=False), sa.Column("status", sa.String(32)), _created())
    op.create_table("attachments", _id(), sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id")),
                    sa.Column("r2_key", sa.String(1024), nullable=False), _created())
    op.create_table("notifications", _id(), sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")),
                    sa.Column("body", sa.Text), sa.Column("read", sa.Boolean, server_default=sa.false()), _created())
    op.create_table("audit_logs", _id(), sa.Column("action", sa.String(100), nullable=False),
                    sa.Column("detail", sa.Text), _created())
    op.create_table("worker_nodes", _id(), sa.Column("name", sa.String(200), nullable=False, unique=True),
                    sa.Column("kind", sa.String(64)), _created())
    op.create_table("worker_heartbeats", _id(), sa.Column("worker_id", sa.Integer, sa.ForeignKey("worker_nodes.id")),
                    sa.Column("seen_at", sa.DateTime(timezone=True), server_default=sa.func.now()))
    op.create_table("preview_jobs", _id(), sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id")),
                    sa.Column("status", sa.String(32), nullable=False), sa.Column("r2_key", sa.String(1024)), _created())
    op.create_table("ai_doc_jobs", _id(), sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id")),
                    sa.Column("status", sa.String(32), nullable=False), sa.Column("r2_key", sa.String(1024)), _created())


def downgrade() -> None:
    for table in ("ai_doc_jobs", "preview_jobs", "worker_heartbeats", "worker_nodes", "audit_logs", "notifications",
                  "attachments", "tasks", "projects", "teams", "users"):
        op.drop_table(table)
