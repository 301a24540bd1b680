"""A vendor call budget every process spends from (vendors.md §4: eCW counts every caller of a practice base), on
SQLite and PostgreSQL: two processes share one budget, and a spent slot makes the caller wait for the next."""

from __future__ import annotations

import hashlib
import multiprocessing
import uuid

import pytest
from sqlalchemy import select

from connectors.budgets import step_budget
from connectors.errors import ConfigurationError, RateLimitedError
from connectors.http import RateLimiter, active_rate_budget, rate_budget, spend_rate_budget
from store import AppDatabase, SharedRateBudget
from store.rate_windows import RateSlot, vendor_call_budget


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_spent_slot_waits_for_the_next_and_two_budgets_on_one_database_count_together(db: AppDatabase) -> None:
    """240 a minute in 24 slots of 2.5 s and 10 calls: the eleventh call of a slot waits for the next, and a second
    budget object (another process's) spends from the same count."""
    key = f"https://ecw.example/{uuid.uuid4()}/fhir"
    clock = _Clock(1_000_000.0)
    first = SharedRateBudget(db, 240, 60.0, clock=clock, sleep=clock.sleep)
    other = SharedRateBudget(db, 240, 60.0, clock=clock, sleep=clock.sleep)
    assert (first.slot_s, first.per_slot) == (2.5, 10)
    assert [first.acquire(key) for _ in range(6)] + [other.acquire(key) for _ in range(4)] == [0.0] * 10
    assert other.acquire(key) == pytest.approx(2.5) and clock.now == pytest.approx(1_000_002.5)
    assert first.acquire("https://another.practice/fhir") == 0.0  # another key, another budget


def _spend(url: str, key: str, calls: int) -> None:
    db = AppDatabase.from_url(url)
    try:
        budget = SharedRateBudget(db, 10, 1.0)  # 10 slots of 0.1 s, one call each
        for _ in range(calls):
            budget.acquire(key)
    finally:
        db.dispose()


def test_two_processes_never_take_more_than_one_slot_share_together(db: AppDatabase, db_url: str) -> None:
    """Two real processes take 8 calls each from a budget of 10 a second (one call per 0.1 s slot): together they
    never take two calls in one slot, so any second holds at most 11 calls (a budget per process would allow 20)."""
    key = f"practice-{uuid.uuid4()}"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_spend, args=(db_url, key, 8)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    with db.session() as session:
        hashed = hashlib.sha256(key.encode()).hexdigest()
        used = session.scalars(select(RateSlot.used).where(RateSlot.key == hashed)).all()
    assert sum(used) == 16 and max(used) == 1 and len(used) == 16


def test_a_budget_that_cannot_grant_anything_is_refused_by_name(db: AppDatabase) -> None:
    with pytest.raises(ConfigurationError, match="SharedRateBudget"):
        SharedRateBudget(db, 0, 60.0)
    with pytest.raises(ConfigurationError, match="max_wait_s"):
        SharedRateBudget(db, 240, 60.0, max_wait_s=-1.0)


def _saturate(db: AppDatabase, key: str, budget: SharedRateBudget, first_slot: int, slots: int) -> None:
    """Other callers have taken every call of ``slots`` slots from ``first_slot`` on (as the table records it)."""
    hashed = hashlib.sha256(key.encode()).hexdigest()
    with db.session() as session, session.begin():
        session.add_all(RateSlot(key=hashed, slot=first_slot + i, used=budget.per_slot) for i in range(slots))


def test_a_saturated_budget_fails_a_caller_at_its_deadline_having_sent_nothing(db: AppDatabase) -> None:
    """eCW's budget spent by background syncs: a caller with a 5 s bound waits through the slots that open within
    it, then gets CallBudgetBusyError (``call_budget_busy``, a throttle: a RateLimitedError) instead of waiting for
    as long as it takes; it took no call. A bound of 0 fails at once."""
    key = f"https://ecw.example/{uuid.uuid4()}/fhir"
    clock = _Clock(1_000_000.5)  # 0.5 s into slot 400000 of 2.5 s
    interactive = SharedRateBudget(db, 240, 60.0, max_wait_s=5.0, clock=clock, sleep=clock.sleep)
    _saturate(db, key, interactive, 400_000, 6)  # the next 15 s are spent

    with pytest.raises(RateLimitedError, match=r"no free call within 5 s") as busy:
        interactive.acquire(key)

    assert busy.value.code == "call_budget_busy"
    assert clock.slept == pytest.approx([2.0, 2.5])  # the slot opening at +7 s is past the bound: not waited for
    assert busy.value.retry_after == pytest.approx(2.5)
    assert _spent(db, key) == 6 * interactive.per_slot
    at_once = SharedRateBudget(db, 240, 60.0, max_wait_s=0.0, clock=clock, sleep=clock.sleep)
    with pytest.raises(RateLimitedError, match="no free call within 0 s"):
        at_once.acquire(key)
    assert len(clock.slept) == 2


def test_a_background_wait_ends_with_the_sync_step_that_runs_it(db: AppDatabase) -> None:
    """A sync's requests wait for the budget no longer than their step may run (EHRSYNC_STEP_BUDGET_S), when that
    ends before the budget's own bound (``BACKGROUND_WAIT_S``)."""
    key = f"https://ecw.example/{uuid.uuid4()}/fhir"
    clock = _Clock(1_000_000.5)
    background = SharedRateBudget(db, 240, 60.0, clock=clock, sleep=clock.sleep)  # bound: BACKGROUND_WAIT_S
    _saturate(db, key, background, 400_000, 6)
    with step_budget("landing Observation", 3.0), pytest.raises(RateLimitedError, match="EHRSYNC_STEP_BUDGET_S"):
        background.acquire(key)
    assert clock.slept == pytest.approx([2.0])


def test_a_wait_ended_by_a_budget_another_setting_sets_names_that_setting(db: AppDatabase) -> None:
    """A write-back's identifier search is bounded by the writeback resource's ``lookup_wait_s`` (its step budget
    says so, ``setting=``): a shared call budget that has no call free before it ends names that setting. Before,
    it named ``EHRSYNC_STEP_BUDGET_S`` for any step's budget, sending an operator to raise one that bounds no
    lookup."""
    key = f"https://ecw.example/{uuid.uuid4()}/fhir"
    clock = _Clock(1_000_000.5)
    background = SharedRateBudget(db, 240, 60.0, clock=clock, sleep=clock.sleep)
    _saturate(db, key, background, 400_000, 6)
    lookup = step_budget("the identifier search", 3.0, setting="lookup_wait_s of the writeback resource")
    with lookup, pytest.raises(RateLimitedError) as raised:
        background.acquire(key)
    said = str(raised.value)
    assert "the 3 s budget of the identifier search (lookup_wait_s of the writeback resource)" in said, said
    assert "EHRSYNC_STEP_BUDGET_S" not in said, said


def _spent(db: AppDatabase, key: str) -> int:
    hashed = hashlib.sha256(key.encode()).hexdigest()
    with db.session() as session:
        return sum(session.scalars(select(RateSlot.used).where(RateSlot.key == hashed)).all())


def test_calls_outside_a_sync_spend_the_shared_budget_of_a_vendor_that_counts_every_caller(db: AppDatabase) -> None:
    """The auth service's code exchange and keepalive refreshes (``vendor_call_budget``): eCW's calls spend the
    shared budget under the FHIR base; a vendor without one spends nothing; inside a sync's budget nothing twice."""
    base = f"https://ecw.example/{uuid.uuid4()}/fhir"
    with vendor_call_budget(db, "ecw", base, max_wait_s=10.0):
        assert active_rate_budget()
        for _ in range(3):
            spend_rate_budget()
    assert _spent(db, base) == 3 and not active_rate_budget()
    with vendor_call_budget(db, "smart", base, max_wait_s=10.0), vendor_call_budget(db, "epic", base, max_wait_s=10.0):
        assert not active_rate_budget()  # the tenant's own server, and a vendor whose budget is per process
    with rate_budget(RateLimiter(100, 1.0), base), vendor_call_budget(db, "ecw", base, max_wait_s=10.0):
        spend_rate_budget()  # the sync's budget counts it
    assert _spent(db, base) == 3


def test_a_caller_bounding_its_wait_is_refused_at_once_when_no_call_comes_free_within_it(db: AppDatabase) -> None:
    """The EHR layers pass a request's own bound (a transfer's deadline, a SMART call's): a call that would come free
    only after it is refused without waiting, nothing taken, ``retry_after`` saying when it would be free."""
    key = f"https://ecw.example/{uuid.uuid4()}/fhir"
    clock = _Clock(1_000_000.5)
    budget = SharedRateBudget(db, 240, 60.0, clock=clock, sleep=clock.sleep)  # its own bound: BACKGROUND_WAIT_S
    _saturate(db, key, budget, 400_000, 6)  # the next 15 s are spent
    with pytest.raises(RateLimitedError, match=r"no free call within the 1.0 s the request may wait") as busy:
        budget.acquire(key, 1.0)
    assert clock.slept == [] and busy.value.retry_after == pytest.approx(2.0)
    assert _spent(db, key) == 6 * budget.per_slot
