"""Client ids of any length: dynamic registration can issue multi-KB JWTs as client ids (was VARCHAR(500)).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # SQLite does not enforce VARCHAR lengths: nothing to change
    op.alter_column("connections", "client_id", type_=sa.Text(), existing_type=sa.String(500), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column("connections", "client_id", type_=sa.String(500), existing_type=sa.Text(), existing_nullable=False)
