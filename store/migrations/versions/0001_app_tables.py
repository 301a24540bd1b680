"""App tables: tenants, provider configs, connections, tokens, OAuth states, audit, API keys, signing keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_table(
        "provider_configs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint("tenant_id", "provider_id", name="uq_provider_configs_tenant_provider"),
    )
    op.create_index("ix_provider_configs_tenant_id", "provider_configs", ["tenant_id"])
    op.create_table(
        "connections",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("fhir_base", sa.String(2000), nullable=False),
        sa.Column("issuer", sa.String(2000), nullable=True),
        sa.Column("client_id", sa.String(500), nullable=False),
        sa.Column("token_endpoint", sa.String(2000), nullable=True),
        sa.Column("smart_v1", sa.Boolean(), nullable=False),
        sa.Column("patient_id", sa.String(200), nullable=True),
        sa.Column("encounter_id", sa.String(200), nullable=True),
        sa.Column("fhir_user", sa.String(2000), nullable=True),
        sa.Column("group_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("granted_scopes", sa.Text(), nullable=True),
        sa.Column("sync_frequency_hours", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("last_sync_at", nullable=True),
    )
    op.create_index("ix_connections_tenant_status", "connections", ["tenant_id", "status"])
    op.create_table(
        "tokens",
        sa.Column(
            "connection_id",
            sa.String(64),
            sa.ForeignKey("connections.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("access_token_ct", sa.Text(), nullable=False),
        sa.Column("refresh_token_ct", sa.Text(), nullable=True),
        sa.Column("id_token_ct", sa.Text(), nullable=True),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("token_type", sa.String(32), nullable=False),
        sa.Column("scope", sa.Text(), nullable=True),
        _ts("issued_at"),
        _ts("expires_at"),
        _ts("refresh_expires_at", nullable=True),
        sa.Column("launch_context", sa.JSON(), nullable=False),
        _ts("updated_at"),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_tokens_tenant_id", "tokens", ["tenant_id"])
    op.create_table(
        "oauth_states",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("state_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("code_verifier_ct", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(200), nullable=True),
        sa.Column("issuer", sa.String(2000), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("redirect_uri", sa.String(2000), nullable=True),
        sa.Column("redirect_target", sa.String(2000), nullable=True),
        sa.Column("launch", sa.String(2000), nullable=True),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        _ts("used_at", nullable=True),
    )
    op.create_index("ix_oauth_states_expires_at", "oauth_states", ["expires_at"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("connection_id", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        _ts("created_at"),
    )
    op.create_index("ix_audit_events_tenant_created", "audit_events", ["tenant_id", "created_at"])
    op.create_index("ix_audit_events_connection_id", "audit_events", ["connection_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        _ts("created_at"),
        _ts("last_used_at", nullable=True),
        _ts("revoked_at", nullable=True),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(200), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("private_key_ct", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("retired_at", nullable=True),
    )
    op.create_index("ix_signing_keys_tenant_id", "signing_keys", ["tenant_id"])


def downgrade() -> None:
    for table in (
        "signing_keys",
        "api_keys",
        "audit_events",
        "oauth_states",
        "tokens",
        "connections",
        "provider_configs",
        "tenants",
    ):
        op.drop_table(table)
