"""Deletion reconciliation's id listing (BDX-31) runs under the step budget (``EHRSYNC_STEP_BUDGET_S``) like a
type's landing: it holds the connection's lock, so a server that pages on and on, or answers each page slowly,
must not keep it listing for as long as it answers. A listing cut short is partial, and a partial listing must
never read as "the rest were deleted": nothing is tombstoned or read back."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from connectors.errors import StepBudgetExceededError
from engine import deletes, reconcile_deletes
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, add_fault, connect_patient, mutate
from tests.engine.job_runs import run_sync

_BUDGET_S = 2.0
_PAGE_DELAY_S = 0.2
_RTYPE = "Observation"  # over a hundred for the sandbox's one patient


def _live_ids(world: SyncWorld, connection_id: str, resource_type: str) -> set[str]:
    with world.env.warehouse() as wh:
        return wh.live_ids(connection_id, resource_type)


def test_a_slow_endless_id_listing_stops_at_the_step_budget_and_tombstones_nothing_bdx31(
    start_sandbox: Any,
    world: SyncWorld,
    http: httpx.Client,
    request_log: RequestLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every id its own page, each answered ``_PAGE_DELAY_S`` late (the sandbox's ``slow`` fault): the whole
    listing needs several times the budget. It stops with ``StepBudgetExceededError`` naming the type's listing, the
    setting and that nothing of the type was tombstoned (before: "the stored mark is kept", a sync's wording),
    having asked for only part of the pages; the warehouse keeps every row, the server's deletions
    included. With the fault gone, the next reconciliation tombstones exactly those deletions."""
    sb = start_sandbox(patients=1)
    conn = connect_patient(world, sb, http=http)
    assert run_sync(world, conn).status == "completed"
    rtype = _RTYPE
    gone = {ref.split("/")[1] for ref in mutate(http, sb, delete=8)["deleted"] if ref.startswith(f"{rtype}/")}
    before = _live_ids(world, conn, rtype)
    pages = len(before - gone)  # one id a page
    assert gone and pages * _PAGE_DELAY_S >= 5 * _BUDGET_S, f"needs more {rtype}: {pages}, {len(gone)} deleted"
    monkeypatch.setattr(deletes, "ID_PAGE_SIZE", 1)
    world.env.step_budget_s = _BUDGET_S
    add_fault(http, sb, "slow", path=f"/fhir/{rtype}", delay_s=_PAGE_DELAY_S, times=None)
    request_log.clear()
    started = time.monotonic()
    with pytest.raises(StepBudgetExceededError) as caught:
        reconcile_deletes(world.env, conn, rtype)
    assert time.monotonic() - started < pages * _PAGE_DELAY_S  # stopped well before the listing's end
    message = str(caught.value)
    assert f"reconciling {rtype} (listing its ids)" in message and "EHRSYNC_STEP_BUDGET_S" in message, message
    # a reconcile's wording, not a sync's (it has no mark): the type, nothing tombstoned, retried next time
    assert f"nothing of {rtype} was tombstoned, the next reconcile retries it" in message and "mark" not in message
    assert 0 < len(request_log.paths(f"/fhir/{rtype}")) < pages
    assert _live_ids(world, conn, rtype) == before  # no partial listing read as deletions, nothing read back

    sb.admin.clear_faults()
    world.env.step_budget_s = 600.0
    report = reconcile_deletes(world.env, conn, rtype)
    assert report.tombstoned == len(gone) and report.unlisted == 0, report
    assert _live_ids(world, conn, rtype) == before - gone
