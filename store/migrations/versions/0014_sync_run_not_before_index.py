"""Sync runs: an index on ``not_before``, so the hourly read of the source holds that ended
(``engine.retries.holds_ended``, for the weekly reconcile's slots) seeks it instead of scanning every run ever made.

Partial (rows with a ``not_before`` only: most runs note none) and covering (``connection_id`` too: the read needs
nothing else), on SQLite and PostgreSQL alike.

On PostgreSQL it is built ``CONCURRENTLY``, outside the migration run's transaction (``autocommit_block``: what ran
before it is committed first): a plain ``CREATE INDEX`` made every write to ``sync_runs`` (each run's start and end)
wait while it waited for open transactions and built. Such a build is committed apart from this revision's version,
and one that failed leaves an invalid index of the name, so a run again drops an invalid one and builds only if none
is there (``IF NOT EXISTS``); a script written offline (``alembic upgrade --sql``) cannot look, so it drops any index
of the name first. A database already at this revision has the same index, built the plain way.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_INDEX = "ix_sync_runs_not_before"
_NOTED = sa.text("not_before IS NOT NULL")
_INVALID = sa.text(
    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace AND NOT i.indisvalid"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(_INDEX, "sync_runs", ["not_before", "connection_id"], sqlite_where=_NOTED)
        return
    with op.get_context().autocommit_block():
        if op.get_context().as_sql:  # a script (alembic --sql) cannot look first: it drops whatever is there
            op.drop_index(_INDEX, table_name="sync_runs", postgresql_concurrently=True, if_exists=True)
        elif op.get_bind().execute(_INVALID, {"name": _INDEX}).first() is not None:  # a concurrent build that failed
            op.drop_index(_INDEX, table_name="sync_runs", postgresql_concurrently=True)
        op.create_index(
            _INDEX,
            "sync_runs",
            ["not_before", "connection_id"],
            postgresql_where=_NOTED,
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="sync_runs")
