"""A token refresh that finds the vendor's call budget busy (vendors.md §4: eCW counts token calls in its
per-practice budget), on SQLite and PostgreSQL, against a real token server and a real shared budget held busy in
the app database by other callers.

The vault refreshes early (SAL-23), while the access token is still valid; a refresh that cannot get a call then
is transient (SAL-25: keep the old token), as a timeout is: the still-valid token is handed out, not an error."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import select

from connectors.http import rate_budget
from store import AppDatabase, SharedRateBudget, TokenCipher, TokenVault
from store.models import AuditEvent, Connection
from store.rate_windows import CallBudgetBusyError, RateSlot
from tests.store.conftest import add_connection
from tests.store.test_store_vault import make_vault, token
from tests.store.tokenserver import RunningTokenServer


@contextmanager
def busy_budget(db: AppDatabase, key: str, *, max_wait_s: float = 0.2) -> Iterator[SharedRateBudget]:
    """eCW's budget (240 calls a minute, shared by every process) active for the calls made in this block, with
    every call of its slots for the next minute already taken by other callers (as the table records it)."""
    budget = SharedRateBudget(db, 240, 60.0, max_wait_s=max_wait_s)
    hashed = hashlib.sha256(key.encode()).hexdigest()
    first = int(time.time() // budget.slot_s) - 1
    with db.session() as session, session.begin():
        session.add_all(RateSlot(key=hashed, slot=first + i, used=budget.per_slot) for i in range(26))
    with rate_budget(budget, key):
        yield budget


def _refresh_audit(db: AppDatabase) -> list[tuple[str, object]]:
    with db.session() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "token.refresh").order_by(AuditEvent.id)
        ).all()
        return [(e.outcome, (e.detail or {}).get("error_code")) for e in events]


def _vault(db: AppDatabase, cipher: TokenCipher, server: RunningTokenServer, *, discovered: bool) -> TokenVault:
    """Connection c1 with at-0/rt-0, 30 s of its hour left (a refresh is due); its token endpoint known or found by
    discovery (which spends a call of the budget too)."""
    endpoint = None if discovered else server.token_endpoint
    add_connection(db, fhir_base=server.fhir_base, token_endpoint=endpoint)
    server.state.valid_refresh.add("rt-0")
    vault = make_vault(db, cipher)
    vault.save_token_response("c1", token("at-0", "rt-0", 3600, left=30))
    return vault


@pytest.mark.parametrize("discovered", [False, True], ids=["token-endpoint-known", "discovery"])
def test_a_busy_call_budget_keeps_a_still_valid_token_sal23_sal25(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer, discovered: bool
) -> None:
    """SAL-23/SAL-25: the early refresh of a token with 30 s left gets no call of the busy budget
    (CallBudgetBusyError: nothing is sent). The still-valid token is handed out, the failure audited as transient
    (``call_budget_busy``), the connection stays active, and the next use, with calls free again, refreshes."""
    vault = _vault(db, cipher, token_server, discovered=discovered)
    with busy_budget(db, token_server.fhir_base):
        assert vault.get_access_token("c1") == "at-0"
    assert token_server.state.grants == []  # nothing was sent
    assert _refresh_audit(db) == [("transient_failure", "call_budget_busy")]
    with db.session() as session:
        conn = session.get(Connection, "c1")
        assert conn is not None and conn.status == "active"
    assert vault.get_access_token("c1") == "at-1"  # the budget free again: the refresh is made
    assert token_server.state.count("refresh_token") == 1


def test_a_busy_call_budget_fails_the_refresh_of_an_expired_token_sal25(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """SAL-25 keeps the old token only while it is valid: an expired one has nothing to fall back on, so the busy
    budget's error (a throttle: the step is retried later) reaches the caller, audited as a transient failure, and
    the connection stays active."""
    vault = _vault(db, cipher, token_server, discovered=False)
    vault.save_token_response("c1", token("at-old", None, 3600, left=-5))  # expired 5 s ago; rt-0 kept
    with busy_budget(db, token_server.fhir_base), pytest.raises(CallBudgetBusyError, match="no free call"):
        vault.get_access_token("c1")
    assert token_server.state.grants == []
    assert _refresh_audit(db) == [("transient_failure", "call_budget_busy")]
    with db.session() as session:
        conn = session.get(Connection, "c1")
        assert conn is not None and conn.status == "active"
    assert vault.get_access_token("c1") == "at-1"
