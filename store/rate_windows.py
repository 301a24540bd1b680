"""A vendor call budget that every process using the app database spends from (vendors.md §4).

eCW allows 250 calls a minute per practice base, counting every caller, and a 429 blocks the rest of the minute.
A budget kept in one process's memory is granted afresh to each Dagster run and to the auth service, so two runs of
one practice spend it twice. Here the calls are counted in the app database, in short slots: a budget of
``capacity`` per ``per_seconds`` is cut into ``slices`` slots of ``capacity // slices`` calls, so any span of
``per_seconds`` holds at most ``capacity`` plus one slot's share (240 a minute in 24 slots: at most 250).

One statement takes a call: an upsert that adds one to the slot's count only while it is below the slot's share
(``RETURNING`` answers whether it did, on SQLite and PostgreSQL alike). Keys are stored hashed (a base URL can be long).

A caller that finds the slots spent waits for the next one, but never past its deadline: ``max_wait_s`` (a person
waiting in a browser gets a short one, the auth service's ``EHR_CALL_BUDGET_WAIT_SECONDS``; background callers
``BACKGROUND_WAIT_S``), or the end of the sync step it runs in when that comes first. Past it the caller gets
``CallBudgetBusyError``, a throttle, having sent nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import time
from collections.abc import Callable, Iterator
from typing import cast

from sqlalchemy import BigInteger, Integer, String, Table, delete
from sqlalchemy.orm import Mapped, mapped_column

from connectors.budgets import step_deadline
from connectors.errors import CallBudgetBusyError, ConfigurationError
from connectors.http import active_rate_budget, rate_budget
from connectors.providers import get_provider
from store.database import AppDatabase
from store.models import Base
from store.upserts import conflict_insert

__all__ = ["BACKGROUND_WAIT_S", "CallBudgetBusyError", "RateSlot", "SharedRateBudget", "vendor_call_budget"]

#: The longest a background caller (a sync's requests, a keepalive refresh) waits for a free call: five budget
#: minutes of other callers taking every call means the practice's budget is saturated; the step fails as throttled
#: (its mark kept, the run retried with backoff) rather than hold its worker. A sync step's own budget ends it sooner.
BACKGROUND_WAIT_S = 300.0

#: Slots older than this many budget periods are deleted now and then (they can no longer limit anything).
_KEEP_PERIODS = 10
_PRUNE_EVERY = 500


class RateSlot(Base):
    """Calls taken under one budget key in one slot (``slot``: seconds since the epoch // slot length)."""

    __tablename__ = "rate_slots"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the budget's key
    slot: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    used: Mapped[int] = mapped_column(Integer)


class SharedRateBudget:
    """``acquire(key)`` blocks until the budget shared by every process allows one more call under ``key``, for at
    most ``max_wait_s`` (or until the active sync step's budget ends, when sooner)."""

    def __init__(
        self,
        db: AppDatabase,
        capacity: int,
        per_seconds: float,
        *,
        slices: int = 24,
        max_wait_s: float = BACKGROUND_WAIT_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if capacity < 1 or per_seconds <= 0 or slices < 1 or not max_wait_s >= 0:
            raise ConfigurationError(
                "SharedRateBudget needs capacity >= 1, per_seconds > 0, slices >= 1 and max_wait_s >= 0"
            )
        slices = min(slices, capacity)  # at least one call a slot
        self.capacity = capacity
        self.per_seconds = per_seconds
        self.slot_s = per_seconds / slices
        self.per_slot = capacity // slices
        self.max_wait_s = max_wait_s
        self._db = db
        self._clock = clock
        self._sleep = sleep
        self._taken = itertools.count(1)

    def acquire(self, key: str, max_wait_s: float | None = None) -> float:
        """Take one call under ``key``, waiting for the next slot while this one is spent; the seconds waited.

        Raises CallBudgetBusyError as soon as the next slot would open past the deadline (``_deadline``; the
        request's own ``max_wait_s`` when shorter: a transfer's deadline, a SMART call's): waiting longer cannot help,
        and the caller learns it without sleeping to the end."""
        hashed = hashlib.sha256(key.encode("utf-8")).hexdigest()
        started = self._clock()
        deadline, bound = self._deadline(started)
        if max_wait_s is not None and started + max_wait_s < deadline:
            deadline, bound = started + max(max_wait_s, 0.0), f"the {max(max_wait_s, 0.0):.1f} s the request may wait"
        waited = 0.0
        while True:
            now = self._clock()
            slot = int(now // self.slot_s)
            if self._take(hashed, slot):
                return waited
            opens = (slot + 1) * self.slot_s
            if opens > deadline:
                raise CallBudgetBusyError(
                    f"the EHR's call budget ({self.capacity} calls per {self.per_seconds:g} s, shared by every "
                    f"process) had no free call within {bound}; nothing was sent, try again shortly",
                    retry_after=max(opens - now, 0.0),
                )
            wait = max(opens - now, 0.001)
            self._sleep(wait)
            waited += wait

    def _deadline(self, started: float) -> tuple[float, str]:
        """When waiting must stop, on this budget's clock, and what set it (for the error's message)."""
        deadline, bound = started + self.max_wait_s, f"{self.max_wait_s:g} s"
        step = step_deadline()
        if step is not None:
            ends_at, budget_s, name, setting = step
            step_end = started + (ends_at - time.monotonic())
            if step_end < deadline:
                deadline, bound = step_end, f"the {budget_s:g} s budget of {name} ({setting})"
        return deadline, bound

    def _take(self, hashed: str, slot: int) -> bool:
        table = cast(Table, RateSlot.__table__)  # typed as any FromClause; a declarative class's is its Table
        statement = (
            conflict_insert(self._db.dialect, table)
            .values(key=hashed, slot=slot, used=1)
            .on_conflict_do_update(
                index_elements=[table.c.key, table.c.slot],
                set_={"used": table.c.used + 1},
                where=table.c.used < self.per_slot,
            )
            .returning(table.c.used)
        )
        with self._db.session() as session:
            taken = session.execute(statement).scalar_one_or_none() is not None
            if next(self._taken) % _PRUNE_EVERY == 0:
                oldest = slot - int(_KEEP_PERIODS * self.per_seconds / self.slot_s)
                session.execute(delete(RateSlot).where(RateSlot.slot < oldest))
            session.commit()
        return taken


@contextlib.contextmanager
def vendor_call_budget(db: AppDatabase, provider_id: str, fhir_base: str, *, max_wait_s: float) -> Iterator[None]:
    """EHR calls made in this block outside a sync (the auth service's launch discovery, code exchange, backend mint,
    admin refresh and admin test calls, keepalive refreshes) spend the vendor's shared budget when it counts every
    caller including the token endpoint (eCW), under the key a sync spends it under (the FHIR base). A budget already
    active (a sync's) counts them itself.
    ``max_wait_s``: how long a call may wait for the budget (a person waiting: short) before CallBudgetBusyError."""
    try:
        limit = get_provider(provider_id).rate_limit
    except ConfigurationError:  # the tenant's own "smart" server, or an unknown id: no vendor budget
        limit = None
    if limit is None or not (limit.across_processes and limit.shares_token_endpoint) or active_rate_budget():
        yield
        return
    with rate_budget(SharedRateBudget(db, limit.capacity, limit.window_s, max_wait_s=max_wait_s), fhir_base):
        yield
