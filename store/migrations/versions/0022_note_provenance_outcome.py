"""Why a ``written`` note owes no Provenance (DWB-82): ``provenance_outcome`` is set by the commit that stops it being
owed, or decides at ``written`` that none is: ``sent``, ``given_up`` (its tries spent), ``not_allowed`` (a gate
closed), ``refused`` (the EHR refused it for good) or ``not_sent`` (nothing to point at, its connection gone). Without
it, a note's API answer could not tell a Provenance given up from one never allowed (the audit log alone said).

Notes written before this revision read none (the API says ``unrecorded`` unless their Provenance id is stored).

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.add_column(sa.Column("provenance_outcome", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.drop_column("provenance_outcome")
