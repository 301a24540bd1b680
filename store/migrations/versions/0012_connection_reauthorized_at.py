"""Connections: ``reauthorized_at``, when a patient's new authorization last took the connection over.

A new authorization of the same patient and user is stored on the connection it replaces (``needs_reauth`` or
``active``), not as a second one (``auth_service.services.reauthorization``). The stamp tells the connections sensor
to ask for an incremental sync of it at once, the patient's status page and the admin status API that it was
reconnected.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("reauthorized_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("reauthorized_at")
