"""A person's confirmed retry (DWB-63, ``confirmed_not_in_ehr``): the person said the note is not in the chart, so
its next DocumentReference POST, where it goes without ``If-None-Exist`` (an EHR without conditional create, or
``send_unconditional``), is preceded by the search for it (``engine.writeback.reconcile.found_first``): a person's
word is no proof. Set by such a retry, cleared as the note is ``written`` or ``unknown`` (``store.outbox.transition``;
a ``failed``/``blocked`` note keeps it through a plain retry, ``store.outbox_retry``). Existing notes take
``send_unconditional``'s value (a confirmed retry in flight before the upgrade keeps its search); others read false.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.add_column(sa.Column("confirmed_not_in_ehr", sa.Boolean(), nullable=False, server_default=sa.false()))
    notes = sa.table("note_outbox", sa.column("confirmed_not_in_ehr", sa.Boolean), sa.column("send_unconditional"))
    op.execute(notes.update().where(notes.c.send_unconditional == sa.true()).values(confirmed_not_in_ehr=True))


def downgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.drop_column("confirmed_not_in_ehr")
