"""Draft-note outbox: notes the host app asked ehrsync to write back to the EHR, and their write state.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "note_outbox",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("connection_id", sa.String(64), sa.ForeignKey("connections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("draft_id", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("encounter_id", sa.String(64)),
        sa.Column("author_id", sa.String(64)),
        sa.Column("loinc_code", sa.String(16), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_bytes", sa.Integer(), nullable=False),
        sa.Column("produced_by", sa.String(200), nullable=False),
        sa.Column("doc_status", sa.String(16), nullable=False),
        sa.Column("clinician_approved", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_http_status", sa.Integer()),
        sa.Column("reason_code", sa.String(64)),
        sa.Column("reason", sa.Text()),
        sa.Column("ehr_resource_id", sa.String(64)),
        sa.Column("ehr_version_id", sa.String(64)),
        sa.Column("binary_id", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_note_outbox_tenant_key"),
    )
    op.create_index("ix_note_outbox_connection_id", "note_outbox", ["connection_id"])
    op.create_index("ix_note_outbox_state_next", "note_outbox", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_note_outbox_state_next", table_name="note_outbox")
    op.drop_index("ix_note_outbox_connection_id", table_name="note_outbox")
    op.drop_table("note_outbox")
