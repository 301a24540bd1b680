"""A person's confirmed retry of a note whose EHR ignores the identifier in ``If-None-Exist`` (DWB-31/63,
``send_unconditional``): the retried note's next DocumentReference POST goes without ``If-None-Exist``, since with it
the condition matches the patient's other notes and the note could never be written. Set only by such a retry, and
cleared as the note leaves ``pending``/``sending`` for any other state (``store.outbox.transition``), so it never
outlives the one attempt it was given for. Existing notes have it false.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.add_column(sa.Column("send_unconditional", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.drop_column("send_unconditional")
