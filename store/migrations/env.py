"""Alembic environment: runs on the connection handed over by ``AppDatabase.migrate`` (or a URL)."""

from __future__ import annotations

import contextlib
import importlib

from alembic import context
from sqlalchemy import engine_from_config, pool

from store.models import Base

with contextlib.suppress(ModuleNotFoundError):  # revision 0002's tables, when pipelines has added them
    importlib.import_module("engine.models")

config = context.config
target_metadata = Base.metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = engine_from_config(
        config.get_section(config.config_ini_section) or {}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with engine.connect() as conn:
        _run(conn)


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
