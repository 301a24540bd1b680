"""Alembic environment: runs on the connection handed over by ``AppDatabase.migrate``, else (the alembic CLI) on
``sqlalchemy.url`` when one is set, else on the app database the settings resolve, the one every ehrsync process
opens (the ini named a default of its own before)."""

from __future__ import annotations

import contextlib
import importlib

from alembic import context

from settings import load_app_settings
from store.database import AppDatabase
from store.models import Base

with contextlib.suppress(ModuleNotFoundError):  # revision 0002's tables, when pipelines has added them
    importlib.import_module("engine.models")

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    """``sqlalchemy.url`` (``alembic -c ...`` with one set), else ``settings.AppSettings.database_url``."""
    return config.get_main_option("sqlalchemy.url") or load_app_settings().database_url


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
    database = AppDatabase.from_url(_url())  # as the app opens it (a SQLite file's folder is created)
    try:
        with database.migration_connection() as conn:  # SQLite: foreign keys off, so batch rebuilds cascade nothing
            _run(conn)
    finally:
        database.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
