"""The vault's waits between a token grant's attempts (a 429 or 503's Retry-After, the backoff: up to 8 s each, ~16 s
over the three attempts) are spent from the sync step they run in (``EHRSYNC_STEP_BUDGET_S``, SAL-25): a wait the
step's budget cannot cover is not slept; the step's budget error is raised instead, as a request's own retry waits
are (``connectors.budgets.check_step_wait``). Before, a refresh inside a step with 2 s left slept the 5 s the token
endpoint asked for and asked again, overrunning the step. Over the token server (a real socket), SQLite and
PostgreSQL; the vault's sleep moves the step's clock, so no test sleeps."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select

from connectors.budgets import step_budget
from connectors.errors import StepBudgetExceededError
from store import AppDatabase, TokenCipher, TokenVault
from store.models import AuditEvent
from tests.connectors.test_http_helpers import FakeClock
from tests.store.conftest import add_connection
from tests.store.test_store_vault import make_vault, token
from tests.store.tokenserver import RunningTokenServer

_THROTTLED = (429, {"error": "temporarily_unavailable"})


def _vault(db: AppDatabase, cipher: TokenCipher, server: RunningTokenServer, clock: FakeClock, left: int) -> TokenVault:
    """Connection c1 holding at-0/rt-0 with ``left`` seconds of lifetime (negative: expired); the endpoint throttles
    its next refreshes with ``Retry-After: 5``."""
    add_connection(db, fhir_base=server.fhir_base)
    server.state.valid_refresh.add("rt-0")
    server.state.answer_headers = {"Retry-After": "5"}
    vault = make_vault(db, cipher, sleep=clock.sleep)
    vault.save_token_response("c1", token("at-0", "rt-0", 3600, left=left))
    return vault


def _step(clock: Callable[[], float], seconds: float) -> step_budget:  # type: ignore[valid-type]
    return step_budget("landing Observation", seconds, clock=clock)


def test_a_retry_after_the_step_budget_cannot_cover_raises_the_steps_budget_error_unslept(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    clock = FakeClock()  # the step's clock: the vault's sleeps move it
    vault = _vault(db, cipher, token_server, clock, left=-60)  # expired: the step cannot go on without a refresh
    token_server.state.answer_next = [_THROTTLED]
    with _step(clock, 2.0), pytest.raises(StepBudgetExceededError) as raised:
        vault.get_access_token("c1")
    said = str(raised.value)
    assert said.startswith("landing Observation would exceed its 2 s budget (EHRSYNC_STEP_BUDGET_S)"), said
    assert "the server asked to wait 5 s and only 2.0 s were left" in said, said
    assert clock.sleeps == [] and token_server.state.count("refresh_token") == 1  # not slept, not asked again
    with db.session() as session:  # audited as a transient failure: the refresh token is kept for the next try
        details = [e.detail for e in session.scalars(select(AuditEvent).where(AuditEvent.action == "token.refresh"))]
    assert details and details[-1].get("error_code") == "step_budget_exceeded", details
    assert vault.get_access_token("c1") == "at-1"  # outside the step, the refresh token still works


def test_the_waits_count_against_the_step_budget_the_second_does_not_fit(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """8 s of budget: the first 5 s wait fits and is spent from it, the second (5 s, 3 left) is refused."""
    clock = FakeClock()
    vault = _vault(db, cipher, token_server, clock, left=-60)
    token_server.state.answer_next = [_THROTTLED, _THROTTLED]
    with _step(clock, 8.0), pytest.raises(StepBudgetExceededError, match=r"only 3\.0 s were left"):
        vault.get_access_token("c1")
    assert clock.sleeps == [5.0] and token_server.state.count("refresh_token") == 2


def test_a_wait_the_step_budget_covers_is_taken(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    clock = FakeClock()
    vault = _vault(db, cipher, token_server, clock, left=-60)
    token_server.state.answer_next = [_THROTTLED]
    with _step(clock, 60.0):
        assert vault.get_access_token("c1") == "at-1"
    assert clock.sleeps == [5.0] and token_server.state.count("refresh_token") == 2


def test_an_early_refresh_that_cannot_wait_keeps_the_still_valid_token_sal25(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """A refresh made early (SAL-23: 30 s left of the hour) that the budget cannot wait for ends as any transient
    failure of it does: the still-valid token is handed out, the step goes on, the refresh is tried on next use."""
    clock = FakeClock()
    vault = _vault(db, cipher, token_server, clock, left=30)
    token_server.state.answer_next = [_THROTTLED]
    with _step(clock, 2.0):
        assert vault.get_access_token("c1") == "at-0"
    assert clock.sleeps == [] and token_server.state.count("refresh_token") == 1
