"""A SQLite URI filename app database URL (``sqlite:///file:...?uri=true``) is the file SQLite opens: nothing is
made at a path read literally from the URI (a folder named ``file:`` in the working directory)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

import pytest

from connectors.errors import ConfigurationError
from store import AppDatabase
from store._refresh_lock import sqlite_refresh_lock
from store.models import Tenant


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize(
    ("form", "relative"),
    [
        ("sqlite:///file:{path}?mode=rwc&uri=true", False),
        ("sqlite:///file://{path}?uri=true", False),
        ("sqlite:///file://localhost{path}?uri=true&cache=private", False),
        ("sqlite:///file:{path}?uri=true", True),
    ],
)
def test_a_file_uri_database_is_made_where_sqlite_opens_it_and_nowhere_else(
    cwd: Path, tmp_path: Path, form: str, relative: bool
) -> None:
    """``from_url`` made the folder of the URI's text (``./file:/tmp/...``), and the refresh lock took its
    lock files in there: relative to each process's working directory, so two processes did not share them."""
    path = (cwd if relative else tmp_path) / "new folder" / "app.db"
    named = path.relative_to(cwd) if relative else path
    db = AppDatabase.from_url(form.format(path=quote(str(named))))
    try:
        db.migrate()
        with db.session() as s, s.begin():
            s.add(Tenant(id="t1", name="by uri"))
        with sqlite_refresh_lock(db, "c1"):
            pass
    finally:
        db.dispose()
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT name FROM tenants").fetchall() == [("by uri",)]
    reader.close()
    assert _names(path.parent) == ["app.db", "app.db.refresh-locks"]
    assert _names(cwd) == (["new folder"] if relative else [])


def test_a_read_only_uri_makes_no_folder(cwd: Path, tmp_path: Path) -> None:
    """``mode=ro``/``rw``: SQLite never creates the file, so no folder is made for it either."""
    AppDatabase.from_url(f"sqlite:///file:{tmp_path / 'missing' / 'app.db'}?mode=ro&uri=true")
    assert not (tmp_path / "missing").exists()
    assert _names(cwd) == []


def test_a_mode_on_a_plain_file_name_is_ignored_as_sqlalchemy_ignores_it(cwd: Path, tmp_path: Path) -> None:
    """Without ``uri=true`` SQLAlchemy drops ``mode=ro`` (with a warning) and SQLite makes the file: its folder
    must be made too. ``from_url`` read the mode anyway, made no folder, and the database could not be opened."""
    path = tmp_path / "new folder" / "app.db"
    with pytest.warns(Warning, match="mode"):  # SQLAlchemy's, when it builds the engine
        db = AppDatabase.from_url(f"sqlite:///{path}?mode=ro")
    try:
        db.migrate()
    finally:
        db.dispose()
    assert _names(path.parent) == ["app.db"]
    assert _names(cwd) == []


def test_uri_parameters_on_a_plain_file_name_are_refused(tmp_path: Path) -> None:
    """``uri=true`` on a name that is no ``file:`` URI: SQLAlchemy pastes the URI parameters into the name, so
    SQLite made a file called ``app.db?cache=private``, and every command that looks for ``app.db`` first said
    "no app database" even after ``ehrsync db migrate``. The URL is refused, naming the form to use."""
    with pytest.raises(ConfigurationError, match=r"\(cache\) need a file: URI"):
        AppDatabase.from_url(f"sqlite:///{tmp_path / 'app.db'}?uri=true&cache=private")
    assert list(tmp_path.iterdir()) == []
    db = AppDatabase.from_url(f"sqlite:///{tmp_path / 'app.db'}?uri=true&timeout=5")  # driver arguments only
    try:
        db.migrate()
    finally:
        db.dispose()
    assert (tmp_path / "app.db").exists()
    assert [name for name in _names(tmp_path) if "?" in name] == []
