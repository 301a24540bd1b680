"""A mark forgotten while an upsert runs stays forgotten (BDX-28, BDX-27; SQLite and PostgreSQL).

The upsert step reads its type's landing (and the mark it observed) before it merges the files, then stores the
mark in the completion transaction. What forgets marks meanwhile holds no connection lock: the run-status sensor
recording a failed full run's intent (``record_unstarted_failure`` -> ``cursors.begin_full``), a reconciliation
that found too many ids missing (``cursors.clear_mark``). The upsert used to store the mark it had read before:
the forgotten mark came back and the full run's owed search of the type was spent, so the full re-pull asked for
never happened. The race is replayed in its order: the forget runs at the upsert's ``rest.upserted`` checkpoint,
between the read and the completion transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from engine import cursors, incremental
from engine.handoff import LandingHandoff, LandingSummary
from engine.reports import TypeReport
from engine.run_outcome import record_unstarted_failure
from engine.runs import ensure_run
from sandbox import SandboxServer
from tests.engine.helpers import SyncWorld, connect_patient

RTYPE = "Observation"
OLD_MARK = datetime(2024, 5, 1, tzinfo=UTC)


def _sensor_records_failed_full_run(world: SyncWorld, conn: str) -> None:
    record_unstarted_failure(world.env.db, "failed-full-run", conn, full=True, error="connection_busy")


def _reconcile_clears_mark(world: SyncWorld, conn: str) -> None:
    cursors.clear_mark(world.env.db, conn, cursors.REST_STREAM, RTYPE)


def _forget_during_upsert(monkeypatch: pytest.MonkeyPatch, forget: Callable[[], None]) -> None:
    """Run ``forget`` once the upsert has read its landing and merged it, before its completion transaction."""

    def at(name: str) -> None:
        if name == "rest.upserted":
            forget()

    monkeypatch.setattr(incremental, "checkpoint", at)


@pytest.mark.parametrize("forget", [_sensor_records_failed_full_run, _reconcile_clears_mark])
def test_bdx28_a_mark_forgotten_during_the_upsert_is_not_stored_again(
    slot_world: SyncWorld,
    shared_sb: SandboxServer,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    forget: Callable[[SyncWorld, str], None],
) -> None:
    """The landing (an incremental search after the stored mark) is merged, but its mark is not stored: the type
    has no mark, so its next run searches it whole, and a failed full run still owes that search."""
    world, env = slot_world, slot_world.env
    conn = connect_patient(world, shared_sb, http=http)
    with env.db.locked_session() as session:  # synced before: the landing searches after this mark
        cursors.advance(session, conn, cursors.REST_STREAM, RTYPE, "earlier-run", OLD_MARK)
        session.commit()
    landed = incremental.land_resource_type(env, conn, RTYPE, "sync-run")
    assert landed.error is None and landed.high_water_mark is not None
    _forget_during_upsert(monkeypatch, lambda: forget(world, conn))

    report = incremental.upsert_resource_type(env, conn, RTYPE, "sync-run")

    assert cursors.get_mark(env.db, conn, cursors.REST_STREAM, RTYPE) is None
    assert report.high_water_mark is None  # the run reports no mark stored
    assert cursors.get_pending(env.db, conn, cursors.REST_STREAM, RTYPE) is None  # the landing is done
    if forget is _sensor_records_failed_full_run:
        assert cursors.owes_full(env.db, conn, RTYPE)  # the full re-pull is still owed


def test_an_upsert_leaves_a_newer_landing_of_another_run_to_its_own_upsert(
    slot_world: SyncWorld, shared_sb: SandboxServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BDX-27: a landing of another run that replaced this one's while it merged (its files not merged here) keeps
    its mark pending: storing it would move the mark past data this upsert never received."""
    world, env = slot_world, slot_world.env
    conn = connect_patient(world, shared_sb, http=http)
    incremental.land_resource_type(env, conn, RTYPE, "sync-run")
    newer = LandingHandoff(summary=LandingSummary.of(TypeReport(RTYPE)))
    later = datetime(2031, 1, 1, tzinfo=UTC)

    def other_run_lands() -> None:
        ensure_run(env.db, conn, "other-run", "incremental")
        cursors.set_pending(env.db, conn, cursors.REST_STREAM, RTYPE, "other-run", later, newer)

    _forget_during_upsert(monkeypatch, other_run_lands)
    incremental.upsert_resource_type(env, conn, RTYPE, "sync-run")

    pending = cursors.get_pending(env.db, conn, cursors.REST_STREAM, RTYPE)
    assert pending is not None and (pending.run_id, pending.mark) == ("other-run", later)
    # Neither the other run's mark nor this one's (its own pending mark, replaced, can no longer show a forget).
    assert cursors.get_mark(env.db, conn, cursors.REST_STREAM, RTYPE) is None
