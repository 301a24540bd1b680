"""App database: migrations match the models on both dialects, SQLite pragmas, URL handling."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text

from connectors.errors import ConfigurationError
from store import AppDatabase
from store import database as database_module
from store.brand_directories import BrandDirectory
from store.models import Base, Tenant

OURS = {
    "tenants",
    "provider_configs",
    "connections",
    "tokens",
    "oauth_states",
    "audit_events",
    "api_keys",
    "signing_keys",
    BrandDirectory.__tablename__,  # 0006
}


def test_migration_0001_matches_models_and_is_idempotent(db: AppDatabase) -> None:
    db.migrate()  # second run is a no-op
    with db.engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        # 0002 (pipelines) builds on 0001; 0003 widens client_id; 0004 run owners; 0005 data retention;
        # 0006 brand directories; 0007 note outbox; 0008 note provenance; 0009 maybe_stored; 0010 rate slots;
        # 0011 sync_runs.not_before, 0012 connections.reauthorized_at, 0013 export slot claims,
        # 0014 the sync_runs.not_before index, 0015 the note's Binary job, 0016 doc_posted, 0017 outcome_issues,
        # 0018 send_unconditional, 0019 confirmed_not_in_ehr, 0020 provenance_due_at, 0021 its index
        assert version == "0022"
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": lambda name, kind, _parent: kind != "table" or name in OURS,
                "include_object": lambda _obj, name, kind, _reflected, _other: kind != "table" or name in OURS,
            },
        )
        diffs = compare_metadata(ctx, Base.metadata)
    if db.dialect == "sqlite":  # 0003 leaves SQLite's VARCHAR(500) alone: SQLite never enforces lengths
        diffs = [d for d in diffs if not (isinstance(d, list) and d[0][0] == "modify_type" and d[0][3] == "client_id")]
    assert diffs == []


def test_timestamps_come_back_timezone_aware(db: AppDatabase) -> None:
    with db.session() as s, s.begin():
        s.add(Tenant(id="t1", name="T"))
    with db.session() as s:
        tenant = s.get(Tenant, "t1")
        assert tenant is not None and tenant.created_at.tzinfo is not None


def test_sqlite_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    db = AppDatabase.from_url(f"sqlite:///{tmp_path / 'sub' / 'app.db'}")
    assert db.dialect == "sqlite"
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "SQLite file"),
        ("sqlite:///:memory:", "SQLite file"),
        ("sqlite:///file::memory:?uri=true", "SQLite file"),
        ("sqlite:///file:app.db?mode=memory&uri=true", "SQLite file"),
        # SQLite's memdb VFS keeps the whole database in memory under a file-like name: nothing reaches the disk
        ("sqlite:///file:app.db?vfs=memdb&uri=true", "SQLite file"),
        ("sqlite:///file:/tmp/app.db?vfs=memdb&uri=true&cache=shared", "SQLite file"),
        ("sqlite:///file://elsewhere/app.db?uri=true", "another host"),
        ("mysql://u@h/db", "unsupported"),
        ("postgresql+psycopg2://u@h/db", "psycopg 3"),
        ("::::", "not a valid"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AppDatabase.from_url(url)


def test_plain_postgresql_url_means_psycopg3() -> None:
    db = AppDatabase.from_url("postgresql://u@127.0.0.1:1/db")
    assert db.engine.dialect.driver == "psycopg"
    db.dispose()


def test_migrate_leaves_a_database_at_head_without_running_alembic_and_migrates_one_behind(
    db: AppDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every process that writes the app database migrates it first, and Alembic's upgrade loads every migration
    script on each call: at head, ``migrate`` reads the version and stops. A database behind head, or at a revision
    these migrations do not know (a newer ehrsync's), still goes to Alembic, which upgrades or refuses it."""
    from alembic import command

    upgrades: list[str] = []
    real_upgrade = command.upgrade
    monkeypatch.setattr(command, "upgrade", lambda cfg, rev, **kw: upgrades.append(rev) or real_upgrade(cfg, rev))

    db.migrate()
    assert upgrades == []

    head = _version(db)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(database_module.__file__).parent / "migrations"))
    with db.migration_connection() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "-1")
    assert _version(db) != head
    db.migrate()
    assert upgrades == ["head"] and _version(db) == head

    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(Exception, match="9999"):
        db.migrate()
    assert upgrades == ["head", "head"]


def _version(db: AppDatabase) -> str:
    with db.engine.connect() as conn:
        return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())
