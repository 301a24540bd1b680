"""Note outbox: an index on ``provenance_due_at`` (DWB-82), so the note sensor's read of owed Provenances
(``store.outbox_queue.provenance_owed``, every tick) seeks the few notes owing one instead of reading every
``written`` note ever made (the ``state, next_attempt_at`` index finds all of them, and the outbox keeps them).

Partial (rows owing a Provenance only: nearly every note owes none), on SQLite and PostgreSQL alike. On PostgreSQL
it is built ``CONCURRENTLY`` outside the migration run's transaction, as revision 0014's: a plain build made every
write to the outbox wait while it read the table; a failed build leaves an invalid index, dropped on the next run.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_INDEX = "ix_note_outbox_provenance_due"
_OWED = sa.text("provenance_due_at IS NOT NULL")
_INVALID = sa.text(
    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace AND NOT i.indisvalid"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(_INDEX, "note_outbox", ["state", "provenance_due_at"], sqlite_where=_OWED)
        return
    with op.get_context().autocommit_block():
        if op.get_context().as_sql:  # a script (alembic --sql) cannot look first: it drops whatever is there
            op.drop_index(_INDEX, table_name="note_outbox", postgresql_concurrently=True, if_exists=True)
        elif op.get_bind().execute(_INVALID, {"name": _INDEX}).first() is not None:  # a concurrent build that failed
            op.drop_index(_INDEX, table_name="note_outbox", postgresql_concurrently=True)
        op.create_index(
            _INDEX,
            "note_outbox",
            ["state", "provenance_due_at"],
            postgresql_where=_OWED,
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="note_outbox")
