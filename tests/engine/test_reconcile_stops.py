"""What no later type gets past stops the weekly reconciliation (BDX-31) at the type that met it, and the report
of that type still says what it did: a refused grant or a long throttle met while confirming a type's deletions or
reading back what its searches missed comes after the listing, so the deletions it confirmed are tombstoned and
counted (before, a refused grant in the read-back raised out of the type, which was then reported "not reconciled,
nothing of it tombstoned" with 0 deleted though its rows were tombstoned; a throttle was recorded and the next
type's listing was sent into it). Engine-level (no Dagster run): the op reports what these reports say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import httpx
import pytest

from connectors.errors import (
    EhrSyncError,
    FhirError,
    InsufficientDiskSpaceError,
    NeedsReauthError,
    RateLimitedError,
    StepBudgetExceededError,
    TransportError,
)
from engine import delete_confirm, deletes
from engine.connection_lock import ConnectionBusyError
from engine.deletes import ReconcileReport
from engine.errors import (
    ConnectionNotFoundError,
    ConnectionNotSyncableError,
    HandoffError,
    NothingLandedError,
    SyncError,
)
from engine.reconcile_run import reconcile_types
from engine.reconcile_stops import run_stop
from engine.run_holds import connection_held_until
from sandbox import SandboxConfig, SandboxServer
from store import RefreshLockTimeoutError
from store.models import Connection
from tests.engine.helpers import SyncWorld, connect_patient
from tests.engine.job_runs import sync_type
from warehouse import open_warehouse

_TYPE = "Observation"  # the type that meets the failure; the types after it must not be reached
_AFTER = ("Condition", "MedicationRequest")  # each has deletions on the EHR (seed 3)
_TYPES = (_TYPE, *_AFTER)  # a few patient types keep it quick; the op passes them all (PATIENT_TYPES)


def _live(world: SyncWorld, cid: str) -> dict[str, int]:
    wh = open_warehouse(world.env.warehouse_target)
    try:
        return {str(r["resource_type"]): int(r["live"]) for r in wh.summary() if r["connection_id"] == cid}
    finally:
        wh.close()


def _synced_then_deleted(world: SyncWorld, sb: SandboxServer, http: httpx.Client) -> tuple[str, list[str]]:
    """A synced patient; then deletions on the EHR (of every type in ``_TYPES``) and one Observation the
    warehouse lost (still on the EHR: the reconcile reads it back): (connection, ``Type/id`` of the deletions)."""
    cid = connect_patient(world, sb, http=http)
    for rtype in _TYPES:
        assert sync_type(world, cid, rtype).error is None, rtype
    refs = sb.admin.mutate(delete=40, seed=3)["deleted"]
    assert all(deleted_of(refs, rtype) for rtype in _TYPES), refs
    con = duckdb.connect(world.env.warehouse_target)
    try:
        ids = [r[0] for r in con.execute("SELECT id FROM fhir_resources WHERE resource_type = ?", [_TYPE]).fetchall()]
        lost = min(i for i in ids if f"{_TYPE}/{i}" not in refs)
        con.execute("DELETE FROM fhir_resources WHERE resource_type = ? AND id = ?", [_TYPE, lost])
    finally:
        con.close()
    return cid, refs


def deleted_of(refs: list[str], rtype: str) -> set[str]:
    """The ids of ``rtype`` among the deletions' ``Type/id``."""
    return {ref.split("/", 1)[1] for ref in refs if ref.split("/", 1)[0] == rtype}


def _stopped_at_the_type(world: SyncWorld, cid: str, before: dict[str, int], code: str) -> ReconcileReport:
    """Reconcile ``_TYPES``: the run stops at ``_TYPE`` (``code``), whose report counts what it tombstoned; the
    types after it are not reached, nothing of them tombstoned."""
    by_type = {r.resource_type: r for r in reconcile_types(world.env, cid, _TYPES, run_id="reconcile-stops")}
    after = _live(world, cid)
    for rtype in _AFTER:
        assert by_type[rtype].error == f"not reached: the run stopped at {_TYPE} ({code})", by_type[rtype]
        assert after[rtype] == before[rtype], rtype
    report = by_type[_TYPE]
    assert report.error is None and report.stopped is not None and report.stopped.code == code, report
    assert report.tombstoned == before[_TYPE] - after[_TYPE], (report, before, after)
    return report


@pytest.mark.parametrize(
    "failure",
    [
        NeedsReauthError("the refresh token was refused (invalid_grant)"),
        # another process has held the grant's refresh lock past 300 s: each later type would wait 300 s again
        RefreshLockTimeoutError("connection c: another process has been refreshing its token for over 300s"),
    ],
    ids=["grant-refused", "refresh-lock-timeout"],
)
def test_a_grant_refused_in_a_read_back_stops_the_run_and_the_types_tombstones_are_counted_bdx31(
    failure: EhrSyncError, http: httpx.Client, world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = failure.code
    with SandboxServer(SandboxConfig(patients=1, seed=5)) as sb:
        cid, deleted = _synced_then_deleted(world, sb, http)
        before = _live(world, cid)

        def refused(*_: Any, **__: Any) -> Any:
            raise failure

        monkeypatch.setattr(deletes, "land_by_ids", refused)
        report = _stopped_at_the_type(world, cid, before, code)
    assert report.tombstoned == len(deleted_of(deleted, _TYPE)) > 0, report
    assert report.recovered is not None and (report.recovered.error or "").startswith(code), report


def test_a_long_throttle_while_confirming_stops_the_run_before_the_next_types_listing_bdx31(
    http: httpx.Client, world: SyncWorld, request_log: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first ``_id`` search confirming the Observation deletions is throttled for an hour: nothing of them
    is confirmed (all kept live), nothing read back, and no later type's listing is sent into the throttle; the
    hour is noted on the connection's newest ``sync_runs`` row, as one met in a listing is (the scheduler and the
    next reconcile honour it)."""
    with SandboxServer(SandboxConfig(patients=1, seed=5)) as sb:
        cid, _ = _synced_then_deleted(world, sb, http)
        before = _live(world, cid)

        def throttled(*_: Any, **__: Any) -> Any:
            raise RateLimitedError("GET Observation answered HTTP 429", 429, retry_after=3600.0)

        monkeypatch.setattr(delete_confirm, "search_by_ids", throttled)
        monkeypatch.setattr(delete_confirm, "_read_each", throttled)
        sent = len(request_log.paths("/fhir/Condition"))
        report = _stopped_at_the_type(world, cid, before, "rate_limited")
        assert len(request_log.paths("/fhir/Condition")) == sent
    assert report.tombstoned == 0 and report.recovered is None, report
    assert (report.confirm_error or "").startswith("rate_limited"), report
    held = connection_held_until(world.env.db, cid, datetime.now(UTC) + timedelta(minutes=55))
    assert held is not None, "the hour the source named is not noted"


class _TypesOwnError(SyncError):
    """A sync error about one type's work (not the connection gone, refused or locked): the next type is unaffected."""

    code = "types_own_error"


def _unopened() -> TransportError:
    """What the client raises when no connection could be opened to the EHR (refused, unresolved)."""
    try:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=httpx.Request("GET", "https://ehr.example"))
    except httpx.ConnectError as exc:
        failure = TransportError("GET https://ehr.example/fhir/Observation failed: connection refused")
        failure.__cause__ = exc
        return failure


@pytest.mark.parametrize(
    ("failure", "stops"),
    [
        (NeedsReauthError("the refresh token was refused (invalid_grant)"), True),
        (RateLimitedError("GET Observation answered HTTP 429", 429, retry_after=3600.0), True),
        (RefreshLockTimeoutError("another process has been refreshing its token for over 300s"), True),
        (InsufficientDiskSpaceError("the landing folder has 1 MB free, 512 MB wanted"), True),
        (_unopened(), True),
        (ConnectionNotFoundError("connection 'c' not found"), True),
        (ConnectionNotSyncableError("connection c is disabled, not active"), True),
        (ConnectionBusyError("connection c is held by run r (pid 1)"), True),
        (_TypesOwnError("Observation: something of this type only"), False),
        (NothingLandedError("no landing of run r waits for c/Observation"), False),
        (HandoffError("landing handoff.warnings must hold strings"), False),
        (StepBudgetExceededError("reconciling Observation ran out of its step budget"), False),
        (FhirError("GET Observation answered HTTP 500", 500), False),
        (TransportError("GET Observation failed: read timeout"), False),
        (OSError("not this type's disk"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_what_stops_a_reconcile_run_and_what_is_one_types_own_bdx31(failure: BaseException, stops: bool) -> None:
    """The run stops at a grant no longer usable, a throttle holding the source, an EHR no connection opens to, a
    full landing disk, or the connection gone, not syncable or locked (every later type would meet it again); any
    other failure, a ``SyncError`` included, is the type's own: recorded on it, and the next type runs."""
    assert (run_stop(failure) is not None) is stops


def test_a_sync_error_of_one_type_is_recorded_on_it_and_the_next_types_are_reconciled_bdx31(
    http: httpx.Client, world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, any ``SyncError`` stopped the run: the types after it were reported not reached, their deletions
    left live for another week."""
    with SandboxServer(SandboxConfig(patients=1, seed=5)) as sb:
        cid, deleted = _synced_then_deleted(world, sb, http)
        before = _live(world, cid)
        listing = deletes._list_ids

        def failing_for_the_type(env: Any, conn: Any, rtype: str) -> Any:
            if rtype == _TYPE:
                raise _TypesOwnError(f"{rtype}: something of this type only")
            return listing(env, conn, rtype)

        monkeypatch.setattr(deletes, "_list_ids", failing_for_the_type)
        by_type = {r.resource_type: r for r in reconcile_types(world.env, cid, _TYPES, run_id="reconcile-own")}
    after = _live(world, cid)
    assert (by_type[_TYPE].error or "").startswith("types_own_error: "), by_type[_TYPE]
    assert after[_TYPE] == before[_TYPE]  # nothing of it tombstoned
    for rtype in _AFTER:
        assert by_type[rtype].error is None and by_type[rtype].stopped is None, by_type[rtype]
        assert by_type[rtype].tombstoned == len(deleted_of(deleted, rtype)) == before[rtype] - after[rtype] > 0, rtype


def test_a_connection_disabled_mid_run_stops_it_at_the_next_type_bdx31(http: httpx.Client, world: SyncWorld) -> None:
    """The other side: the connection no longer syncable (an admin disabled it between two types) is met by every
    later type, so the run stops at the first that meets it."""
    with SandboxServer(SandboxConfig(patients=1, seed=5)) as sb:
        cid, _ = _synced_then_deleted(world, sb, http)

        def disable(report: ReconcileReport) -> None:
            if report.resource_type == _TYPE:
                with world.env.db.session() as session, session.begin():
                    row = session.get(Connection, cid)
                    assert row is not None
                    row.status = "disabled"

        reports = reconcile_types(world.env, cid, _TYPES, run_id="reconcile-disabled", on_report=disable)
    first, met, last = reports
    assert first.error is None, first
    assert (met.error or "").startswith("connection_not_syncable: "), met
    assert last.error == f"not reached: the run stopped at {_AFTER[0]} (connection_not_syncable)", last
