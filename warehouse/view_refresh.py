"""Refresh the analyst views without stalling behind analysts.

DuckDB: analysts read the published snapshot (``warehouse.snapshot``), never the warehouse file, so nothing of
theirs is in the way; the one writer still replaces only views whose definition changed (the same marker, below),
because recreating all of them cost every refresh ~0.3 s of CPU (DuckDB binds each view's query anew).

PostgreSQL: analysts query the views live (MVCC: their reads never block the sync's writes). Replacing a view,
though, needs an exclusive lock that waits for every open transaction that read it, and makes later readers queue
behind it. So a view is only touched when its definition changed (a sha256 of its statement kept as the view's
comment), and the refresh runs under ``lock_timeout``: a long analyst transaction makes it fail with
``AnalystViewsBusyError`` (nothing changed, the next refresh retries) instead of hanging every query behind it.
"""

from __future__ import annotations

import hashlib
import re

from warehouse._cursor import Cursor
from warehouse.errors import InvalidInputError, WarehouseError
from warehouse.merge import Warehouse
from warehouse.views import view_statements

__all__ = ["AnalystViewsBusyError", "refresh_analyst_views", "statement_marker"]

_CREATE = re.compile(r'^\s*CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+"?([A-Za-z_][A-Za-z0-9_]*)"?', re.IGNORECASE)
_MARKER = "ehrsync view sha256:"


class AnalystViewsBusyError(WarehouseError):
    """A view whose definition changed is held by another session (an analyst's open transaction) for longer than
    the lock timeout; the views were left as they were."""


def statement_marker(statement: str) -> str:
    """What a view's comment says when it was created from ``statement``."""
    return _MARKER + hashlib.sha256(statement.encode()).hexdigest()


def _named(statements: list[str]) -> list[tuple[str, str]]:
    named: list[tuple[str, str]] = []
    for stmt in statements:
        match = _CREATE.match(stmt)
        if match is None:
            raise InvalidInputError(f"not a CREATE VIEW statement: {stmt[:60]!r}")
        named.append((match.group(1), stmt))
    return named


def refresh_analyst_views(wh: Warehouse, *, lock_timeout_s: float = 10.0) -> list[str]:
    """(Re)create the analyst views; returns the names of those created or replaced (DuckDB: all of them)."""
    if wh.dialect.name == "duckdb":
        return _refresh_duckdb(wh, _named(view_statements(wh.dialect)))
    if lock_timeout_s <= 0:
        raise InvalidInputError(f"lock_timeout_s must be positive, got {lock_timeout_s}")
    # imported here: only a PostgreSQL warehouse gets this far, and the code location (which imports this module
    # in every Dagster process) would otherwise pay psycopg's ~0.2 s of CPU on a DuckDB deployment too
    import psycopg

    try:
        return _refresh_postgres(wh, _named(view_statements(wh.dialect)), lock_timeout_s)
    except psycopg.errors.LockNotAvailable as exc:
        raise AnalystViewsBusyError(
            f"an analyst view whose definition changed is in use by another session for more than "
            f"{lock_timeout_s:g} s (lock_timeout); the views were left unchanged and the next refresh tries again "
            "(end long-running analyst transactions, or raise EHRSYNC_ANALYST_LOCK_TIMEOUT_SECONDS)"
        ) from exc
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise WarehouseError(
            f"an analyst view changed its columns but other objects depend on it: {exc.diag.message_detail or exc}; "
            "drop or recreate those objects, then refresh again"
        ) from exc


def _refresh_duckdb(wh: Warehouse, named: list[tuple[str, str]]) -> list[str]:
    """Replace (``CREATE OR REPLACE``) only the views whose stored marker differs, in dependency order, in one
    transaction. DuckDB keeps a view as its SQL text and binds it when read, so a replaced view never breaks the
    views reading it, and a changed column list needs no drop."""
    with wh._write("views") as cur:
        cur.execute(
            "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal "
            "AND database_name = current_database() AND schema_name = current_schema()"
        )
        stored = {str(name): comment for name, comment in cur.fetchmany(100_000)}
        changed = [(n, s) for n, s in named if stored.get(n) != statement_marker(s)]
        for name, stmt in changed:
            cur.execute(_CREATE.sub(f'CREATE OR REPLACE VIEW "{name}"', stmt, count=1))
            cur.execute(f"COMMENT ON VIEW \"{name}\" IS '{statement_marker(stmt)}'")
    return [name for name, _ in changed]


def _refresh_postgres(wh: Warehouse, named: list[tuple[str, str]], lock_timeout_s: float) -> list[str]:
    """Only views whose stored marker differs are replaced, by ``CREATE OR REPLACE`` (views reading them stay);
    when a change renames, drops or retypes a column, every view is dropped (dependants first) and recreated with
    the grants it had (an analyst role granted SELECT keeps it). One transaction under ``lock_timeout``: it all
    happens, or nothing does."""
    import psycopg

    with wh._write("views") as cur:
        cur.execute(f"SET LOCAL lock_timeout = '{max(int(lock_timeout_s * 1000), 1)}ms'")
        cur.execute(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c WHERE c.relkind = 'v' "
            "AND c.relnamespace = to_regnamespace(current_schema()) AND c.relname = ANY(%s)",
            ([name for name, _ in named],),
        )
        stored = dict(cur.fetchmany(len(named) + 1))
        changed = [(n, s) for n, s in named if stored.get(n) != statement_marker(s)]
        if not changed:
            return []
        cur.execute("SAVEPOINT ehrsync_views")
        try:
            for name, stmt in changed:
                cur.execute(_CREATE.sub(f'CREATE OR REPLACE VIEW "{name}"', stmt, count=1))
        except (psycopg.errors.InvalidTableDefinition, psycopg.errors.FeatureNotSupported):
            cur.execute("ROLLBACK TO SAVEPOINT ehrsync_views")  # a column renamed, dropped or retyped
            grants = _grants(cur, [name for name, _ in named])
            for name, _ in reversed(named):
                cur.execute(f'DROP VIEW IF EXISTS "{name}"')
            for _, stmt in named:
                cur.execute(stmt)
            for grant in grants:
                cur.execute(grant)
            changed = named
        for name, stmt in changed:
            cur.execute(f"COMMENT ON VIEW \"{name}\" IS '{statement_marker(stmt)}'")
    return [name for name, _ in changed]


def _grants(cur: Cursor, names: list[str]) -> list[str]:
    """``GRANT`` statements giving back what the views ``names`` of this schema grant today (to roles other than
    the owner, PUBLIC included): a dropped view loses its privileges, and a read-only analyst role with them."""
    cur.execute(
        "SELECT format('GRANT %%s ON %%I TO %%s%%s', a.privilege_type, c.relname, "
        "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, "
        "CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) "
        "FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) AS a LEFT JOIN pg_roles r ON r.oid = a.grantee "
        "WHERE c.relkind = 'v' AND c.relnamespace = to_regnamespace(current_schema()) AND c.relname = ANY(%s) "
        "AND a.grantee <> c.relowner AND (a.grantee = 0 OR r.oid IS NOT NULL) ORDER BY 1",
        (names,),
    )
    grants: list[str] = []
    while rows := cur.fetchmany(1000):
        grants += (str(row[0]) for row in rows)
    return grants
