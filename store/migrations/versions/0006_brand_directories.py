"""Brand directories: the SMART User-access Brands bundles a tenant loaded for its patients' connect page.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "brand_directories",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("bundle_timestamp", sa.String(64)),
        sa.Column("brand_count", sa.Integer(), nullable=False),
        sa.Column("brands", sa.JSON(), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "source", name="uq_brand_directories_tenant_source"),
    )
    op.create_index("ix_brand_directories_tenant_id", "brand_directories", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_brand_directories_tenant_id", table_name="brand_directories")
    op.drop_table("brand_directories")
