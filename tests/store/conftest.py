"""Store fixtures: an app database on SQLite and on PostgreSQL, a cipher, and a counting token server."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import AppDatabase, TokenCipher
from store.models import Connection, Tenant
from store.outbox import NoteInput
from tests.fixtures.app_db import copy_migrated_sqlite
from tests.store.tokenserver import RunningTokenServer, run_token_server

#: a draft note as a host app enqueues it (tests replace what they vary)
NOTE = NoteInput(
    tenant_id="t1",
    connection_id="c1",
    idempotency_key="host-key-1",
    patient_id="p1",
    title="Visit",
    content_type="text/plain; charset=utf-8",
    body="Plan: rest.",
    body_bytes=11,
    produced_by="scribe v3",
)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    # a test of ``db`` (a migrated database; ``db_url`` names the same one) starts from a copy of one migrated
    # once; a test of the migrations themselves (``db_url`` alone) from an empty database
    empty = "db" not in request.fixturenames
    return str(request.getfixturevalue("postgres_url" if empty else "migrated_postgres_url"))


@pytest.fixture
def db(db_url: str, tmp_path: Path) -> Iterator[AppDatabase]:
    if db_url.startswith("sqlite:"):
        copy_migrated_sqlite(tmp_path / "app.db")
    database = AppDatabase.from_url(db_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def key_b64() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def cipher(key_b64: str) -> TokenCipher:
    return TokenCipher.from_env({"INTEGRATIONS_TOKEN_ENC_KEY": key_b64})


@pytest.fixture
def token_server() -> Iterator[RunningTokenServer]:
    with run_token_server() as server:
        yield server


def add_connection(
    db: AppDatabase,
    *,
    fhir_base: str,
    token_endpoint: str | None = None,
    kind: str = "patient",
    connection_id: str = "c1",
    tenant_id: str = "t1",
    scopes: str | None = None,
    client_id: str = "app-1",
    provider_id: str = "generic",
) -> str:
    with db.session() as s, s.begin():
        if s.get(Tenant, tenant_id) is None:
            s.add(Tenant(id=tenant_id, name=f"Practice {tenant_id}"))
            s.flush()
        s.add(
            Connection(
                id=connection_id,
                tenant_id=tenant_id,
                provider_id=provider_id,
                kind=kind,
                fhir_base=fhir_base,
                issuer=fhir_base,
                client_id=client_id,
                token_endpoint=token_endpoint,
                granted_scopes=scopes,
            )
        )
    return connection_id
