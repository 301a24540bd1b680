"""A SQLite URI filename app database URL (``sqlite:///file:...?uri=true``) is the file SQLite opens: nothing is
made at a path read literally from the URI (a folder named ``file:`` in the working directory)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

import pytest

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
