"""The shape of the locations ``AppSettings`` resolves, checked when the settings are read so that a bad one
stops the process with a message naming its variable (``DATABASE_URL: ...``, ``EHRSYNC_STATE_DIR: ...``).

``store.AppDatabase`` opens an app database URL by the same rule (``app_database_url_problem``).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

__all__ = ["app_database_url_problem", "normalise_database_url", "state_dir_problem"]


def normalise_database_url(url: str) -> str:
    """Name the driver explicitly: a bare ``postgresql://`` means psycopg 3 here, never psycopg2."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def app_database_url_problem(url: str) -> str | None:
    """What is wrong with an app database URL (never echoing it: it may hold a password), or ``None``."""
    try:
        parsed = make_url(normalise_database_url(url))
    except Exception as exc:  # sqlalchemy raises ArgumentError (and ValueError for some malformed ports)
        return f"not a valid SQLAlchemy URL ({type(exc).__name__})"
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            return "the app database must be a SQLite file (in-memory databases cannot be shared)"
        return None
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            return "the app database on PostgreSQL must use psycopg 3 ('postgresql+psycopg://')"
        return None
    return (
        f"unsupported app database backend {backend!r}: use sqlite:///path/to/app.db "
        "or postgresql+psycopg://user@host/db"
    )


def state_dir_problem(value: str) -> str | None:
    """A state folder must be (or become) a folder: not a file, nor under one."""
    path = Path(value).expanduser().absolute()
    if path.exists() and not path.is_dir():
        return f"{value} is a file, not a folder"
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        return f"{value} lies under {parent}, which is a file"
    return None
