"""OAuth state storage (SAL-09, SAL-13): hashed, single use, browser-bound, 10 minute expiry."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from connectors.smart import TokenResponse
from store import AppDatabase, InvalidStateError, OAuthStateStore, TokenCipher, TokenVault
from store.models import Connection, OAuthState, Tenant
from store.states import CallbackOutcome

VERIFIER = "v" * 64


def create(store: OAuthStateStore, session: str = "browser-1") -> str:
    return store.create(
        browser_session=session,
        tenant_id="t1",
        provider_id="epic",
        issuer="https://ehr.example/fhir",
        code_verifier=VERIFIER,
        nonce="n1",
        redirect_uri="https://app.example/cb",
        redirect_target="/done",
        launch="L1",
        scope="launch openid",
        extra={"connection_kind": "patient"},
    )


def test_sal09_state_entropy_and_only_hashes_stored(db: AppDatabase, cipher: TokenCipher) -> None:
    store = OAuthStateStore(db, cipher)
    states = {create(store) for _ in range(5)}
    assert len(states) == 5 and all(len(s) >= 43 for s in states)  # 32 bytes = 256 bits
    with db.session() as s:
        rows = list(s.scalars(select(OAuthState)))
    dump = repr([vars(r) for r in rows])
    assert not any(state in dump for state in states)
    assert VERIFIER not in dump and "browser-1" not in dump
    assert all(r.expires_at - r.created_at == timedelta(minutes=10) for r in rows)


def test_sal13_consume_once(db: AppDatabase, cipher: TokenCipher) -> None:
    store = OAuthStateStore(db, cipher)
    state = create(store)
    consumed = store.consume(state, browser_session="browser-1")
    assert consumed.code_verifier == VERIFIER
    assert (consumed.tenant_id, consumed.provider_id, consumed.issuer) == ("t1", "epic", "https://ehr.example/fhir")
    assert (consumed.nonce, consumed.launch, consumed.redirect_target) == ("n1", "L1", "/done")
    assert consumed.extra == {"connection_kind": "patient"}
    assert VERIFIER not in repr(consumed)
    with pytest.raises(InvalidStateError, match="already used"):
        store.consume(state, browser_session="browser-1")


@pytest.mark.parametrize("state", ["", "unknown-state"])
def test_sal13_unknown_state(db: AppDatabase, cipher: TokenCipher, state: str) -> None:
    with pytest.raises(InvalidStateError):
        OAuthStateStore(db, cipher).consume(state, browser_session="browser-1")


def test_sal09_expired_after_ten_minutes(db: AppDatabase, cipher: TokenCipher) -> None:
    now = [datetime.now(UTC)]
    store = OAuthStateStore(db, cipher, clock=lambda: now[0])
    state = create(store)
    now[0] += timedelta(minutes=10, seconds=1)
    with pytest.raises(InvalidStateError, match="expired"):
        store.consume(state, browser_session="browser-1")
    assert store.purge_expired() == 1


def test_sal09_bound_to_browser_session_and_burnt_on_mismatch(db: AppDatabase, cipher: TokenCipher) -> None:
    store = OAuthStateStore(db, cipher)
    state = create(store)
    with pytest.raises(InvalidStateError, match="different browser"):
        store.consume(state, browser_session="attacker")
    with pytest.raises(InvalidStateError, match="already used"):
        store.consume(state, browser_session="browser-1")


def test_sal13_concurrent_consume_exactly_one_wins(db: AppDatabase, cipher: TokenCipher) -> None:
    store = OAuthStateStore(db, cipher)
    state = create(store)
    wins: list[str] = []
    losses: list[str] = []
    barrier = threading.Barrier(4)

    def attempt() -> None:
        barrier.wait()
        try:
            wins.append(store.consume(state, browser_session="browser-1").code_verifier)
        except InvalidStateError:
            losses.append("lost")

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins == [VERIFIER] and len(losses) == 3


def test_sal13_consumed_state_keeps_its_callback_outcome_for_its_own_browser_and_url(
    db: AppDatabase, cipher: TokenCipher
) -> None:
    """A reload of the callback is answered from the consumed state: only for the browser and the callback URL
    (replay key) that consumed it, for the state's time to live, and with no code or token stored."""
    now = [datetime.now(UTC)]
    store = OAuthStateStore(db, cipher, clock=lambda: now[0])
    state = create(store)
    key = "code=the-secret-code&error="
    consumed = store.consume(state, browser_session="browser-1", replay_key=key)
    assert consumed.extra == {"connection_kind": "patient"}  # the outcome is the store's own
    pending = store.recorded_outcome(state, browser_session="browser-1", replay_key=key)
    assert pending is not None and pending.outcome == CallbackOutcome("pending")
    assert (pending.tenant_id, pending.redirect_target, pending.consumed_at) == ("t1", "/done", now[0])
    assert store.recorded_outcome(state, browser_session="attacker", replay_key=key) is None
    assert store.recorded_outcome(state, browser_session="browser-1", replay_key="code=other&error=") is None
    store.record_outcome(state, CallbackOutcome("connected", connection_id="c-1"))
    done = store.recorded_outcome(state, browser_session="browser-1", replay_key=key)
    assert done is not None and done.outcome == CallbackOutcome("connected", connection_id="c-1")
    with db.session() as s:
        dump = repr([vars(r) for r in s.scalars(select(OAuthState))])
    assert "the-secret-code" not in dump and state not in dump and "browser-1" not in dump
    now[0] += timedelta(minutes=10)
    assert store.recorded_outcome(state, browser_session="browser-1", replay_key=key) is None


def test_the_connection_a_callback_stored_stays_named_when_it_then_stops(db: AppDatabase, cipher: TokenCipher) -> None:
    """Kept with the state as soon as it is stored: a callback that then stops (``abandoned``) must not lose it,
    or its reload would tell the patient nothing was shared."""
    store = OAuthStateStore(db, cipher)
    state = create(store)
    store.consume(state, browser_session="browser-1", replay_key="k")
    store.record_outcome(state, CallbackOutcome("pending", connection_id="c-1"))
    store.record_outcome(state, CallbackOutcome("abandoned"))
    kept = store.recorded_outcome(state, browser_session="browser-1", replay_key="k")
    assert kept is not None and kept.outcome == CallbackOutcome("abandoned", connection_id="c-1")


def _store_and_name(db: AppDatabase, cipher: TokenCipher, store: OAuthStateStore, state: str, crash: bool) -> None:
    """A new connection, its tokens and the state naming it, in one transaction (what the callback does)."""
    with db.locked_session() as session:
        session.add(Connection(id="c-1", tenant_id="t1", provider_id="epic", fhir_base="https://e", client_id="a"))
        session.flush()
        TokenVault(db, cipher).save_token_response("c-1", TokenResponse("at", "Bearer", 300, "x"), session=session)
        store.record_outcome(state, CallbackOutcome("pending", connection_id="c-1"), session=session)
        if crash:
            raise RuntimeError("the process stopped before the commit")


def test_an_outcome_recorded_in_the_callers_transaction_is_kept_with_it_or_not_at_all(
    db: AppDatabase, cipher: TokenCipher
) -> None:
    """The callback names its connection on the state in the transaction that stores the connection and its tokens
    (``auth_service.services.grants``): rolled back, none of them is kept; committed, all are."""
    with db.session() as s, s.begin():
        s.add(Tenant(id="t1", name="T"))
    store = OAuthStateStore(db, cipher)
    state = create(store)
    store.consume(state, browser_session="browser-1", replay_key="k")
    with pytest.raises(RuntimeError):
        _store_and_name(db, cipher, store, state, crash=True)
    kept = store.recorded_outcome(state, browser_session="browser-1", replay_key="k")
    assert kept is not None and kept.outcome == CallbackOutcome("pending")
    with db.session() as s:
        assert s.get(Connection, "c-1") is None and TokenVault(db, cipher).token_info("c-1") is None
    _store_and_name(db, cipher, store, state, crash=False)
    kept = store.recorded_outcome(state, browser_session="browser-1", replay_key="k")
    assert kept is not None and kept.outcome == CallbackOutcome("pending", connection_id="c-1")
    assert TokenVault(db, cipher).token_info("c-1") is not None


def test_sal13_a_state_burnt_by_another_browser_keeps_no_outcome(db: AppDatabase, cipher: TokenCipher) -> None:
    store = OAuthStateStore(db, cipher)
    state = create(store)
    with pytest.raises(InvalidStateError, match="different browser"):
        store.consume(state, browser_session="attacker")
    store.record_outcome(state, CallbackOutcome("connected", connection_id="c-1"))  # nothing to record on
    assert store.recorded_outcome(state, browser_session="browser-1") is None
    assert store.recorded_outcome(state, browser_session="attacker") is None
