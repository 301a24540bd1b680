"""Sync state: run history, cursors, Bulk jobs and files, attachment links (owned by pipelines).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("connection_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS),
        sa.Column("finished_at", _TS),
        sa.Column("counts", sa.JSON, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("duration_s", sa.Float),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_sync_runs_connection_created", "sync_runs", ["connection_id", "created_at"])

    op.create_table(
        "sync_cursors",
        sa.Column("connection_id", sa.String(64), primary_key=True),
        sa.Column("stream", sa.String(200), primary_key=True),
        sa.Column("resource_type", sa.String(1000), primary_key=True),
        sa.Column("high_water_mark", _TS),
        sa.Column("last_run_id", sa.String(64)),
        sa.Column("pending_run_id", sa.String(64)),
        sa.Column("pending_mark", _TS),
        sa.Column("pending", sa.JSON),
        sa.Column("updated_at", _TS, nullable=False),
    )

    op.create_table(
        "bulk_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("connection_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("type_key", sa.String(1000), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("group_id", sa.String(200)),
        sa.Column("types", sa.JSON, nullable=False),
        sa.Column("since_used", _TS),
        sa.Column("kickoff_url", sa.Text, nullable=False),
        sa.Column("status_url", sa.Text, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("requested_at", _TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("transaction_time", _TS),
        sa.Column("requires_access_token", sa.Boolean),
        sa.Column("manifest", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_index("ix_bulk_jobs_connection_status", "bulk_jobs", ["connection_id", "status"])

    op.create_table(
        "bulk_job_files",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("bulk_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("resource_type", sa.String(100), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("expected_count", sa.Integer),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("landed_path", sa.Text),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("quarantined", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("updated_at", _TS, nullable=False),
        sa.UniqueConstraint("job_id", "url", name="uq_bulk_job_files_job_url"),
    )

    op.create_table(
        "sync_attachments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("connection_id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("resource_type", sa.String(100), nullable=False),
        sa.Column("resource_id", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("content_type", sa.String(200), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("stored_at", _TS, nullable=False),
        sa.UniqueConstraint("connection_id", "resource_type", "resource_id", "url", name="uq_sync_attachments_ref"),
    )
    op.create_index("ix_sync_attachments_connection_url", "sync_attachments", ["connection_id", "url"])


def downgrade() -> None:
    op.drop_index("ix_sync_attachments_connection_url", table_name="sync_attachments")
    op.drop_table("sync_attachments")
    op.drop_table("bulk_job_files")
    op.drop_index("ix_bulk_jobs_connection_status", table_name="bulk_jobs")
    op.drop_table("bulk_jobs")
    op.drop_table("sync_cursors")
    op.drop_index("ix_sync_runs_connection_created", table_name="sync_runs")
    op.drop_table("sync_runs")
