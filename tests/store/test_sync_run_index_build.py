"""Revision 0014's index on ``sync_runs.not_before`` is built ``CONCURRENTLY`` on PostgreSQL: a plain ``CREATE INDEX``
holds a lock that makes every write to ``sync_runs`` (each run's start and end) wait while it waits and builds, at
migrate time. A concurrent build that failed leaves an invalid index of that name, and a build that succeeded is
committed apart from the migration's version: the migration run again must still end with one valid index."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from store import AppDatabase

_INDEX = "ix_sync_runs_not_before"
_WRITE = "UPDATE sync_runs SET status = status WHERE false"  # a write's lock on the table, whatever its rows


@pytest.fixture
def at_0013(postgres_url: str) -> Iterator[AppDatabase]:
    db = AppDatabase.from_url(postgres_url)
    db.migrate("0013")
    yield db
    db.dispose()


def _index_valid(db: AppDatabase) -> list[bool]:
    query = "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s"
    with db.engine.connect() as conn:
        return [bool(row[0]) for row in conn.exec_driver_sql(query, (_INDEX,))]


def _build_waiting(db: AppDatabase) -> bool:
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND query ILIKE %s"
    )
    with db.engine.connect() as conn:
        return bool(conn.exec_driver_sql(query, (f"%{_INDEX}%",)).scalar_one())


def test_writes_to_sync_runs_go_on_while_the_migration_builds_its_index(at_0013: AppDatabase) -> None:
    """A run's transaction has written to ``sync_runs`` and is still open: the index build waits for it. Another
    run's write meanwhile must not wait behind the build (before: it did, until the first run's transaction ended
    and the build was done; here its 5 s lock timeout failed it)."""
    db = at_0013
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            db.migrate("0014")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    migrating = threading.Thread(target=migrate)
    with db.engine.connect() as open_run:
        open_run.exec_driver_sql(_WRITE)  # its transaction stays open
        migrating.start()
        deadline = time.monotonic() + 60
        while not _build_waiting(db):
            assert migrating.is_alive() and time.monotonic() < deadline, errors or "the build never waited"
            time.sleep(0.05)
        with db.engine.connect() as other_run:
            other_run.exec_driver_sql("SET lock_timeout = '5s'")
            other_run.exec_driver_sql(_WRITE)
            other_run.commit()
        open_run.commit()
    migrating.join(120)
    assert not errors, errors
    assert _index_valid(db) == [True]


def test_the_migration_run_again_after_an_interrupted_or_unrecorded_build_ends_with_one_valid_index(
    at_0013: AppDatabase,
) -> None:
    db = at_0013
    with db.engine.connect() as conn:  # a concurrent build that failed: an invalid index of that name
        conn.exec_driver_sql(
            "INSERT INTO sync_runs (id, connection_id, kind, status, created_at, counts, bytes) "
            "VALUES ('r1', 'c1', 'rest', 'ok', now(), '{}', 0), ('r2', 'c1', 'rest', 'ok', now(), '{}', 0)"
        )
        conn.commit()
        conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(sa.exc.IntegrityError):
            conn.exec_driver_sql(f"CREATE UNIQUE INDEX CONCURRENTLY {_INDEX} ON sync_runs ((1))")
    assert _index_valid(db) == [False]
    db.migrate("0014")
    assert _index_valid(db) == [True]
    with db.engine.connect() as conn:  # a build that succeeded, its version not recorded (the run failed later)
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0013'")
        conn.commit()
    db.migrate("0014")
    assert _index_valid(db) == [True]
    columns = {ix["name"]: ix["column_names"] for ix in sa.inspect(db.engine).get_indexes("sync_runs")}
    assert columns[_INDEX] == ["not_before", "connection_id"], columns


def test_the_sql_script_alembic_writes_offline_builds_the_index_on_a_database_at_0013(
    at_0013: AppDatabase, postgres_url: str
) -> None:
    """``alembic upgrade 0013:0014 --sql`` (a script for a DBA to review and run) cannot look at the database, so
    the revision may not query it for an invalid leftover (before: AttributeError, no script at all); run statement
    by statement as psql does, the script ends with one valid index and the version at 0014."""
    from alembic import command
    from alembic.config import Config

    from store.database import _MIGRATIONS

    script = io.StringIO()
    cfg = Config(output_buffer=script)
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", postgres_url)
    command.upgrade(cfg, "0013:0014", sql=True)
    chunks = [
        "\n".join(line for line in c.splitlines() if not line.startswith("--")) for c in script.getvalue().split(";\n")
    ]
    statements = [chunk.strip() for chunk in chunks if chunk.strip()]
    with at_0013.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.autocommit = True
        for statement in statements:
            raw.execute(statement)
    assert _index_valid(at_0013) == [True]
    with at_0013.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one() == "0014"
