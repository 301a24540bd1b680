"""What every command shares: the one-line error rule, the app database URL and the signing-key check."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeGuard, TypeVar

import click

if TYPE_CHECKING:
    from sqlalchemy.exc import SQLAlchemyError

    from settings import AppSettings
    from store import AppDatabase

__all__ = [
    "app_database",
    "check_signing_key",
    "database_url",
    "exit_on_configuration_error",
    "is_verbose",
    "one_line",
]

T = TypeVar("T")


def one_line(exc: BaseException) -> str:
    """A single line naming the problem: typed ehrsync errors by code, anything else by type and message."""
    from auth_service.core.redaction import redact
    from connectors.errors import ConfigurationError, EhrSyncError

    if isinstance(exc, EhrSyncError):
        text = f"{exc.code}: {exc.message}"
    elif isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    elif _is_database_error(exc):  # as the engine names one it cannot read: one form for every command
        from store.database import database_error_text

        text = f"{ConfigurationError.code}: {database_error_text(exc)}"
    else:
        detail = str(exc) or "no details"
        text = f"{type(exc).__name__}: {detail} (run with -v for details)"
    return redact(" ".join(text.split()))[:1000]


def _is_database_error(exc: BaseException) -> TypeGuard[SQLAlchemyError]:
    """An SQLAlchemy error; a command that never loaded SQLAlchemy cannot have one, and does not load it (its
    package import is ~0.15 s of CPU) to say so: ``auth seed`` of a bad file, ``sync`` of a bad setting."""
    if "sqlalchemy" not in sys.modules:
        return False
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, SQLAlchemyError)


def exit_on_configuration_error(action: Callable[[], T]) -> T:
    """Run ``action``; a configuration problem ends the command with its message, never a traceback."""
    from connectors.errors import EhrSyncError

    try:
        return action()
    except EhrSyncError as exc:
        raise click.ClickException(one_line(exc)) from None


def is_verbose(ctx: click.Context) -> bool:
    """``ehrsync -v COMMAND``: the root group's flag, which every command honours."""
    return bool(ctx.find_root().params.get("verbose"))


def check_signing_key(settings: AppSettings | None = None) -> None:
    """``EHR_JWT_PRIVATE_KEY`` (PEM text or a path) of ``settings`` (default: the process's), when set, must load
    before a run signs with it."""
    from auth_service.core.keys import load_private_key
    from connectors.errors import ConfigurationError
    from settings import load_app_settings

    key = (settings or load_app_settings()).EHR_JWT_PRIVATE_KEY
    value = key.get_secret_value().strip() if key is not None else ""
    if not value:
        return
    try:
        load_private_key(value)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def database_url() -> str:
    """The app database every ehrsync process resolves for this environment (``settings.AppSettings``)."""
    from settings import load_app_settings

    return load_app_settings().database_url


@contextmanager
def app_database(*, existing: bool = False, url: str | None = None) -> Iterator[AppDatabase]:
    """The app database of ``url`` (default ``database_url()``) for one command, its connections closed when the
    command ends. ``existing``, for a command that only reads it first: a SQLite file that is not there is named
    (run ``ehrsync db migrate`` first) instead of made empty, with its folder, by opening it."""
    from store import AppDatabase

    url = url or database_url()
    if existing:
        exit_on_configuration_error(lambda: _refuse_missing_sqlite_file(url))
    database = AppDatabase.from_url(url)
    try:
        yield database
    finally:
        database.dispose()


def _refuse_missing_sqlite_file(url: str) -> None:
    from sqlalchemy.engine import make_url

    from connectors.errors import ConfigurationError
    from settings.locations import normalise_database_url, sqlite_database_file

    parsed = make_url(normalise_database_url(url))
    path = sqlite_database_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None and not path.exists():
        # absolute, as SQLite resolves it from the working folder (``~`` included: SQLite does not expand it)
        raise ConfigurationError(f"no app database at {path.absolute()}: run `ehrsync db migrate` first")
