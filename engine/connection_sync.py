"""``sync_references``: the resources a patient's data references, read after its clinical types.

A whole sync of a connection is the Dagster job (``pipelines.defs.sync``, run in-process by
``ehrsync.run_now.run_sync_now``): one step per type calls ``land_resource_type`` then ``upsert_resource_type``
(``engine.incremental``), and a last step calls ``sync_references``. There is no second orchestrator: Dagster
decides what runs, ``engine.run_outcome.finish_sync_run`` how the run ends.
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.fhir import SYNCED_RESOURCE_TYPES, patient_search_param
from engine import cursors, runs
from engine.connection_info import load_connection
from engine.connection_lock import hold_connection
from engine.environment import SyncEnvironment
from engine.references import fetch_references
from engine.reports import TypeReport
from warehouse import Warehouse

__all__ = ["PATIENT_TYPES", "rest_types", "sync_references"]

# Searched in the patient compartment (connectors' one list of synced types), Patient first.
PATIENT_TYPES: tuple[str, ...] = tuple(t for t in SYNCED_RESOURCE_TYPES if patient_search_param(t) is not None)


def rest_types(selected: Sequence[str] | None) -> list[str]:
    """The patient types a run covers: those among ``selected`` (a run limited to some types), all when None."""
    return list(PATIENT_TYPES) if selected is None else [t for t in PATIENT_TYPES if t in selected]


def sync_references(env: SyncEnvironment, connection_id: str, run_id: str) -> dict[str, TypeReport]:
    """Read the Practitioner/Organization/Location/Medication references queued by upserted types.

    Per-type failures come back in the reports (those references stay queued); NeedsReauthError propagates.
    """
    with hold_connection(env, connection_id, run_id):
        return _sync_references(env, connection_id, run_id)


def _sync_references(env: SyncEnvironment, connection_id: str, run_id: str) -> dict[str, TypeReport]:
    queued = cursors.queued_references(env.db, connection_id)
    if not queued:
        if cursors.owes_reference_refresh(env.db, connection_id):
            cursors.reference_refresh_done(env.db, connection_id)  # nothing queued for a full run to re-read
        return {}
    conn = load_connection(env.db, connection_id)
    refresh = _refreshes(env, connection_id, run_id)
    with env.warehouse() as wh:
        wanted = queued if refresh else _not_yet_stored(wh, connection_id, queued)
        cursors.dequeue_references(env.db, connection_id, set(queued) - set(wanted))
        if not wanted:
            return {}
        with env.fhir_client(conn) as client:
            reports = fetch_references(env, conn, client, wh, run_id, wanted)
    _record_counts(env, run_id, reports)
    if refresh and all(report.error is None for report in reports.values()):
        cursors.reference_refresh_done(env.db, connection_id)
    return reports


def _refreshes(env: SyncEnvironment, connection_id: str, run_id: str) -> bool:
    """Whether every queued reference is read again, stored or not: in a full run, and in any run after a full
    run that did not finish reading them (``cursors.owes_reference_refresh``: its retry does its work)."""
    run = runs.get(env.db, run_id)
    return (run is not None and run.kind == "full") or cursors.owes_reference_refresh(env.db, connection_id)


def _record_counts(env: SyncEnvironment, run_id: str, reports: dict[str, TypeReport]) -> None:
    """Add each referenced type's counts to the run's row, as each clinical type's upsert adds its own."""
    if not reports or runs.get(env.db, run_id) is None:
        return
    with env.db.locked_session() as session:
        for resource_type, report in reports.items():
            runs.record_type_counts(session, run_id, resource_type, report.as_metadata())
        session.commit()


def _not_yet_stored(wh: Warehouse, connection_id: str, references: list[str]) -> list[str]:
    """References whose target the warehouse does not hold yet: an incremental run costs what changed.

    Shared resources (Practitioner, Organization, ...) already stored are re-read by the next full sync.
    """
    by_type: dict[str, set[str]] = {}
    for ref in references:
        rtype, _, rid = ref.partition("/")
        by_type.setdefault(rtype, set()).add(rid)
    stored = {rtype: wh.live_ids(connection_id, rtype) for rtype in by_type}
    return [ref for ref in references if ref.partition("/")[2] not in stored[ref.partition("/")[0]]]
