"""Two sign-ins of the same patient and user at once (two tabs) on PostgreSQL: one connection, never two.

SQLite serializes the callbacks' transactions (``BEGIN IMMEDIATE``). On PostgreSQL ``find_replaced`` locks the
matching rows ``FOR UPDATE``, which locks nothing when there is no connection yet: both callbacks found none and
each made one, two active connections syncing the same record (what ``reauthorization`` exists to prevent)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from auth_service.services.grants import KeptConnection, keep_connection
from connectors.smart import SmartConfiguration, TokenResponse
from store import AppDatabase, TokenVault
from store.models import Connection, ConnectionKind, Tenant
from tests.auth_service.test_reauthorization_rules import BASE, CIPHER, PROFILE

FIELDS: dict[str, Any] = {
    "kind": ConnectionKind.PATIENT,
    "patient_id": "p1",
    "fhir_user": "Patient/p1",
    "granted_scopes": "patient/*.rs",
}


def _sign_in(ctx: Any, access: str, kept: list[KeptConnection], record: Any = None) -> None:
    token = TokenResponse(access_token=access, token_type="Bearer", expires_in=3600, scope=None, patient="p1")
    cfg = SmartConfiguration(BASE, f"{BASE}/token")
    kept.append(
        keep_connection(
            ctx, PROFILE, cfg, token, reauthorize=True, action="authorize.complete", actor="u", detail={},
            record=record, **FIELDS,
        )
    )  # fmt: skip


def _waiting_on_a_lock(db: AppDatabase) -> bool:
    with db.session() as session:
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        return bool(session.scalar(text(waiting)))


@pytest.mark.postgres
def test_sal34_two_sign_ins_of_one_patient_at_once_make_one_connection_on_postgres(postgres_url: str) -> None:
    db = AppDatabase.from_url(postgres_url)
    db.migrate()
    with db.session() as session, session.begin():
        session.add(Tenant(id="t1", name="Practice"))
    ctx = SimpleNamespace(db=db, cipher=CIPHER, vault=TokenVault(db, CIPHER))
    inside, release = threading.Event(), threading.Event()

    def hold(_session: Session, _connection_id: str) -> None:  # tab 1 has stored its connection, not committed
        inside.set()
        release.wait(30)

    first: list[KeptConnection] = []
    second: list[KeptConnection] = []
    tab1 = threading.Thread(target=_sign_in, args=(ctx, "a1", first, hold))
    tab1.start()
    assert inside.wait(30)
    tab2 = threading.Thread(target=_sign_in, args=(ctx, "a2", second))
    tab2.start()
    deadline = time.monotonic() + 30
    while tab2.is_alive() and not _waiting_on_a_lock(db) and time.monotonic() < deadline:
        time.sleep(0.05)
    release.set()
    tab1.join(30)
    tab2.join(30)
    try:
        with db.session() as session:
            assert session.scalar(select(func.count()).select_from(Connection)) == 1  # before: 2
        assert second[0].connection_id == first[0].connection_id and second[0].reauthorized
    finally:
        ctx.vault.close()
        db.dispose()
