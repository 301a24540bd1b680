"""Removing one connection's rows from the warehouse: every ``fhir_*`` table that has a ``connection_id`` column.

The tables are found in the catalog, not listed here, so a per-connection warehouse table added later is purged
too without a change here. Only the warehouse's own tables (prefix ``fhir_``) are touched: the app database may
share the schema (one PostgreSQL database for both), and its ``audit_events`` or ``sync_runs`` are not the
warehouse's to delete. Views are not tables: the analyst views read ``fhir_resources`` live, so they lose the
rows in the same commit.
"""

from __future__ import annotations

import logging

from warehouse._cursor import Backend, Cursor
from warehouse.errors import InvalidInputError

__all__ = ["TABLE_PREFIX", "Purge"]

logger = logging.getLogger(__name__)
TABLE_PREFIX = "fhir_"  # the warehouse's tables; everything else in the schema may belong to someone else

# Base tables of this database's own schema (temporary tables live in another catalog on DuckDB and in
# pg_temp_N on PostgreSQL) that carry a connection_id column.
_CONNECTION_TABLES = (
    "SELECT c.table_name FROM information_schema.columns c JOIN information_schema.tables t "
    "ON t.table_catalog = c.table_catalog AND t.table_schema = c.table_schema AND t.table_name = c.table_name "
    "WHERE c.column_name = 'connection_id' AND t.table_type = 'BASE TABLE' "
    "AND c.table_schema = current_schema() AND c.table_catalog = current_database() ORDER BY c.table_name"
)


class Purge(Backend):
    """``purge_connection``: the warehouse half of ``engine.purge``."""

    def connection_tables(self) -> list[str]:
        """The warehouse tables holding per-connection rows (``fhir_resources``, ``fhir_errors``, ...)."""
        with self._read() as cur:
            return self._connection_tables(cur)

    @staticmethod
    def _connection_tables(cur: Cursor) -> list[str]:
        cur.execute(_CONNECTION_TABLES)
        return [name for (name,) in cur.fetchmany(10_000) if str(name).startswith(TABLE_PREFIX)]

    def purge_connection(self, connection_id: str) -> dict[str, int]:
        """Delete every row of ``connection_id`` from every per-connection table in one transaction; returns
        the rows deleted per table. Idempotent: a second call deletes nothing and returns zeros."""
        if not isinstance(connection_id, str) or not connection_id:
            raise InvalidInputError("connection_id must be a non-empty string")
        deleted: dict[str, int] = {}
        with self._write(f"purge/{connection_id}") as cur:
            for table in self._connection_tables(cur):
                quoted = '"' + table.replace('"', '""') + '"'
                deleted[table] = cur.execute_count(f"DELETE FROM {quoted} WHERE connection_id = %s", (connection_id,))
        logger.info("purged connection %s from the warehouse: %d rows", connection_id, sum(deleted.values()))
        return deleted
