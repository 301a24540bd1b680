"""The shape of the locations ``AppSettings`` resolves, checked when the settings are read so that a bad one
stops the process with a message naming its variable (``DATABASE_URL: ...``, ``EHRSYNC_STATE_DIR: ...``).

``store.AppDatabase`` opens an app database URL by the same rule (``app_database_url_problem``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.util import asbool

__all__ = [
    "app_database_url_problem",
    "normalise_database_url",
    "sqlite_database_file",
    "sqlite_uri_mode",
    "state_dir_problem",
]


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
        try:
            if sqlite_database_file(parsed) is None:
                return "the app database must be a SQLite file (in-memory databases cannot be shared)"
        except ValueError as exc:
            return str(exc)
        return None
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            return "the app database on PostgreSQL must use psycopg 3 ('postgresql+psycopg://')"
        return None
    return (
        f"unsupported app database backend {backend!r}: use sqlite:///path/to/app.db "
        "or postgresql+psycopg://user@host/db"
    )


# The query arguments SQLAlchemy's pysqlite dialect gives the driver; with ``uri=true`` it appends every other one to
# the name it passes SQLite (``?cache=private``), SQLite's URI parameters.
_DRIVER_ARGUMENTS = frozenset(
    {"uri", "timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements"}
)


def sqlite_uri_mode(url: URL) -> str | None:
    """The ``mode`` SQLite opens a SQLite URL's ``file:`` URI name with (``ro``, ``rw``, ``rwc``, ``memory``), or
    ``None``: no ``file:`` URI (SQLAlchemy then drops a ``mode`` in the URL), or no mode given (``rwc``)."""
    if asbool(url.query.get("uri", False)) and (url.database or "").startswith("file:"):
        mode = url.query.get("mode")
        return mode if isinstance(mode, str) else None
    return None


def sqlite_database_file(url: URL) -> Path | None:
    """The file a SQLite URL names, as SQLite reads it (``None``: in memory). With ``?uri=true`` a ``file:`` name is
    an SQLite URI filename (``file:app.db``, ``file:/abs/app.db``, ``file:///abs/app.db``, %-escapes), never a
    folder named ``file:``; ``ValueError`` for a URI naming another host, or for URI parameters on another name
    (SQLite would open a file named ``app.db?cache=private``)."""
    name = url.database or ""
    uri = asbool(url.query.get("uri", False))
    if uri and not name.startswith("file:") and (extra := sorted(set(url.query) - _DRIVER_ARGUMENTS)):
        raise ValueError(
            f"SQLite URI parameters ({', '.join(extra)}) need a file: URI name "
            "(sqlite:///file:/path/to/app.db?...&uri=true); on a plain path SQLite makes them part of the file name"
        )
    if uri and name.startswith("file:"):
        if sqlite_uri_mode(url) == "memory" or url.query.get("vfs") == "memdb":  # memdb: a named in-memory database
            return None
        name = name[len("file:") :].partition("#")[0]
        if name.startswith("//"):
            host, _, path = name[2:].partition("/")
            if host not in ("", "localhost"):
                raise ValueError("a SQLite file: URI names another host; only a local file can be used")
            name = "/" + path
        name = unquote(name)
    return None if name in ("", ":memory:") else Path(name)


def state_dir_problem(value: str) -> str | None:
    """A state folder must be (or become) a folder: not a file, nor under one."""
    path = Path(value).expanduser().absolute()
    if path.exists() and not path.is_dir():
        return f"{value} is a file, not a folder"
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        return f"{value} lies under {parent}, which is a file"
    return None
