"""``INSERT ... ON CONFLICT`` on the app database, whichever it is (SQLite or PostgreSQL).

Core SQLAlchemy's ``insert`` has no ``ON CONFLICT`` clause; each dialect's own does, with the same
``on_conflict_do_nothing`` and ``on_conflict_do_update``. The choice between them is made here, once, for the
store's and the engine's upserts (the cursor rows, the export slot's claim, the shared call budget's slots).
"""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from store.models import Base

__all__ = ["conflict_insert"]


def conflict_insert(dialect: str, table: type[Base] | Table) -> postgresql.Insert | sqlite.Insert:
    """An ``INSERT`` into ``table`` that takes an ``ON CONFLICT`` clause, for ``dialect`` (``AppDatabase.dialect``,
    or a session bind's ``dialect.name``): PostgreSQL's for ``"postgresql"``, else SQLite's (the app database's
    other)."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
