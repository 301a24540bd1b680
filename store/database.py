"""The app database: engine setup per dialect, sessions, write-locked sessions, and migrations."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from connectors.errors import ConfigurationError
from settings.locations import (
    app_database_url_problem,
    normalise_database_url,
    sqlite_database_file,
    sqlite_uri_mode,
)
from store._engines import shared_engine
from store._sqlite_pool import SQLITE_POOL_SIZE, guard_sqlite_pool

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["AppDatabase", "database_error_text"]

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


@cache
def _heads() -> frozenset[str]:
    """The head revisions of the migrations shipped with this package (read once per process: they cannot change
    under it)."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(_alembic_config()).get_heads())


SQLITE_WAL_SIZE_LIMIT = 4 * 1024 * 1024  # bytes


def _configure_sqlite(engine: Engine) -> None:
    """WAL + busy timeout, foreign keys on, and transactions begun by us so ``BEGIN IMMEDIATE`` is possible.

    pysqlite's own implicit BEGIN is switched off (isolation_level=None) and SQLAlchemy's ``begin`` event
    emits ``BEGIN`` or ``BEGIN IMMEDIATE`` (when the connection asks for ``sqlite_immediate``).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Pooled connections stay open, so the last close no longer deletes the -wal file: past a checkpoint it is
        # cut back to this size instead of keeping the size of the largest transaction ever written.
        cursor.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_SIZE_LIMIT}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class _RowValuesHidden(logging.Filter):
    """SQLAlchemy's DEBUG logs each fetched row (``Row %r``): the app database's rows hold note text (the outbox),
    connect claims and sealed tokens, and logs hold no PHI or secrets. The row's values are dropped, the line kept.
    On ``sqlalchemy.engine.Engine``, the logger of every engine (``echo`` too: it wraps the same logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Row %r":
            record.msg, record.args = "Row (values hidden)", ()
        return True


def _hide_row_values() -> None:
    sql_logger = logging.getLogger("sqlalchemy.engine.Engine")
    if not any(isinstance(f, _RowValuesHidden) for f in sql_logger.filters):
        sql_logger.addFilter(_RowValuesHidden())


def _create_engine(url: str, echo: bool, **options: Any) -> Engine:
    """``hide_parameters``: SQLAlchemy's statement log (``sqlalchemy.engine`` at INFO, what an operator turns on to
    see the SQL) and its errors' text (``StatementError``) would show each statement's parameters, among them a
    draft note's text; they show the statements only."""
    _hide_row_values()
    return create_engine(url, echo=echo, hide_parameters=True, **options)


def _sqlite_engine(url: str, echo: bool) -> Engine:
    """A pool of reused connections (``store._sqlite_pool`` says what guards them); never a wait for one."""
    engine = _create_engine(
        url,
        echo,
        poolclass=QueuePool,
        pool_size=SQLITE_POOL_SIZE,
        max_overflow=-1,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    _configure_sqlite(engine)
    guard_sqlite_pool(engine)
    return engine


def database_error_text(exc: BaseException) -> str:
    """How every ehrsync process names an app database it cannot open or read: the driver's error class and the
    first line of its message, never the statement or its parameters (they may hold ciphertext)."""
    orig = getattr(exc, "orig", None)  # a DBAPIError wraps the driver's own error
    cause = orig if isinstance(orig, BaseException) else exc
    first = next(iter(str(cause).strip().splitlines()), "") if cause is orig else ""
    return f"app database error ({type(cause).__name__}{': ' + first if first else ''}): check DATABASE_URL"


class AppDatabase:
    """One engine per process; sessions are short-lived and never shared between threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str, *, echo: bool = False) -> AppDatabase:
        """SQLite file or ``postgresql+psycopg://``: the URL ``settings.AppSettings.database_url`` resolved.

        Every ``AppDatabase`` of one URL in a process shares one engine (``store._engines`` says why)."""
        url = normalise_database_url(url)
        problem = app_database_url_problem(url)
        if problem is not None:
            raise ConfigurationError(f"app database URL: {problem}")
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            path = sqlite_database_file(parsed)
            assert path is not None
            if sqlite_uri_mode(parsed) not in ("ro", "rw"):  # SQLite may create the file: make its folder
                path.parent.mkdir(parents=True, exist_ok=True)
            return cls(shared_engine(url, echo, lambda: _sqlite_engine(url, echo)))
        return cls(
            shared_engine(url, echo, lambda: _create_engine(url, echo, pool_pre_ping=True, pool_size=5, max_overflow=5))
        )

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite file this database is (as SQLite resolves a ``file:`` URI), ``None`` on PostgreSQL."""
        return sqlite_database_file(self.engine.url) if self.dialect == "sqlite" else None

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def session(self) -> Session:
        """A new session; use as ``with db.session() as s, s.begin(): ...``."""
        return self._sessions()

    @contextmanager
    def locked_session(self) -> Iterator[Session]:
        """A transaction that can take write locks: ``BEGIN IMMEDIATE`` on SQLite (database write lock).

        On PostgreSQL it is an ordinary transaction; callers lock rows with ``SELECT ... FOR UPDATE``.
        Commits on success, rolls back on error.
        """
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn = conn.execution_options(sqlite_immediate=True)
            with Session(bind=conn, expire_on_commit=False) as session:
                try:
                    yield session
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise

    @contextmanager
    def migration_connection(self) -> Iterator[Connection]:
        """The connection of a migration run (``migrate`` and ``alembic`` itself, store/migrations/env.py).

        On PostgreSQL, Alembic begins the run's one transaction itself (env.py's ``begin_transaction``), so that a
        migration can step out of it for what PostgreSQL runs only outside a transaction (``autocommit_block``:
        revision 0014's ``CREATE INDEX CONCURRENTLY``); in a transaction begun here, Alembic cannot.

        On SQLite, the run's one transaction is begun here, with foreign keys off while it runs: Alembic's batch
        mode rebuilds a table (copy, drop, rename) to drop or alter a column, and dropping ``tenants`` or
        ``connections`` with foreign keys on would cascade and delete every row that references them. ``PRAGMA
        foreign_key_check`` before the commit refuses a migration that left a dangling reference. The pragma only
        takes effect outside a transaction, so it is set on the driver connection before ``BEGIN``; the connection
        is closed after, never returned to the pool.
        """
        with self.engine.connect() as conn:
            if self.dialect != "sqlite":
                yield conn
                return
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            try:
                with conn.begin():
                    yield conn
                    if conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                        raise ConfigurationError("a migration left rows that reference missing rows; rolled back")
            finally:  # closed, not pooled: no later session may get a connection with foreign keys off
                conn.invalidate()

    def migrate(self, revision: str = "head") -> None:
        """Alembic upgrade (to head by default) using the migrations shipped in this package. A database at head
        already is left as it is without running Alembic: its upgrade loads every migration script again on each
        call (~20-40 ms of CPU), and every process that opens the app database for writing migrates it first."""
        from alembic import command  # imported here: ~12 MB that a process which only syncs never needs
        from alembic.runtime.migration import MigrationContext

        if revision == "head":
            with self.engine.connect() as probe:  # not the migration's own: Alembic begins that one's transaction
                current = frozenset(MigrationContext.configure(probe).get_current_heads())
            if current == _heads():
                logger.info("app database already at head (%s)", self.dialect)
                return
        with self.migration_connection() as conn:
            cfg = _alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        logger.info("app database migrated to %s (%s)", revision, self.dialect)

    def dispose(self) -> None:
        """Close the engine's pooled connections; the engine (shared by this URL's databases) stays usable."""
        self.engine.dispose()
