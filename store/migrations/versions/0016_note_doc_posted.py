"""Whether a note's DocumentReference POST may have left (``doc_posted``), committed just before it is sent: a note
left in ``sending`` without it (its run was killed while polling its Binary's job, or before the POST) was never
POSTed, so the resumed run sends it instead of leaving it ``unknown`` for a person.

Notes already in ``sending`` when this runs were left by a run that may have POSTed them: they are marked as such,
so they still go to the identifier search, never sent twice.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.add_column(sa.Column("doc_posted", sa.Boolean(), nullable=False, server_default=sa.false()))
    outbox = sa.table("note_outbox", sa.column("state", sa.String()), sa.column("doc_posted", sa.Boolean()))
    op.execute(outbox.update().where(outbox.c.state == "sending").values(doc_posted=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.drop_column("doc_posted")
