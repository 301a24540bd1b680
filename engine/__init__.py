"""The plain-Python sync engine (no Dagster): incremental REST sync, Bulk export, deletes, run history.

The Dagster layer (``pipelines`` outside this package) calls only what ``__all__`` lists; a whole sync of a
connection is always its job (``ehrsync.run_now.run_sync_now`` runs it in-process), never a loop in here:

- ``SyncEnvironment(db, vault, zone, attachments, warehouse_target, http=None, overlap=5 min, ...)``
- ``land_resource_type(env, connection_id, resource_type, run_id, *, full=False) -> TypeReport``
  search → Parquet, recorded as *pending* in ``sync_cursors`` (skipped types: ``skipped_reason``)
- ``upsert_resource_type(env, connection_id, resource_type, run_id) -> TypeReport``
  pending landing → warehouse, then the mark advances in the same commit as the run's per-type counts
- ``sync_references(env, connection_id, run_id) -> dict[str, TypeReport]`` reads the references that upserted
  types queued (durably, so a crash cannot lose them); run it after the clinical types
- ``reconcile_deletes(env, connection_id, resource_type) -> ReconcileReport`` tombstones ids the server no longer lists
  once asking for each again confirms it gone (``engine.delete_confirm``: a listing can skip a live match), and
  reads back the ids it lists that the warehouse lacks (a search that skipped them without saying so)
- ``run_bulk_export(env, connection_id, run_id, *, types=None, progress=None) -> BulkReport``
  kick-off or resume, download, land, upsert, advance ``_since``; ``report.status`` says how it ended; group
  connections then export members added since the last export in full (BDX-15, ``bulk_members``)
- ``runs``: ``create_run``, ``ensure_run``, ``continue_run``, ``mark_running``, ``complete``, ``fail``,
  ``hold_until``, ``history``, ``get`` (``complete`` closes older runs of the connection that a killed process left
  open as ``abandoned``; ``hold_until`` notes when the source said to come back, a deferred member's row closed so)
- ``hold_connection(env, connection_id, run_id)``: the per-connection lock every entry point for a connection
  step holds (``ConnectionBusyError`` after ``EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS``); taking it removes what
  killed runs of the connection left in the landing zone (``connection_lock``, ``residue``)

Typed errors (``engine.errors``) derive from ``connectors.errors.EhrSyncError``. The crash hook for
tests is described in ``engine.checkpoints``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import warehouse  # noqa: F401  # first: sets Arrow's pool before any engine module loads pyarrow
from connectors.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from engine import runs
    from engine.bulk_export import run_bulk_export
    from engine.checkpoints import CRASH_ENV
    from engine.connection_info import ConnectionInfo, load_connection
    from engine.connection_lock import ConnectionBusyError, hold_connection
    from engine.connection_sync import PATIENT_TYPES, sync_references
    from engine.deletes import ReconcileReport, reconcile_deletes
    from engine.environment import SyncEnvironment
    from engine.errors import ConnectionNotFoundError, ConnectionNotSyncableError, NothingLandedError, SyncError
    from engine.incremental import land_resource_type, upsert_resource_type
    from engine.references import REFERENCED_TYPES
    from engine.reports import (
        NOT_SUPPORTED,
        SCOPE_NOT_GRANTED,
        BulkReport,
        LandingReport,
        TypeReport,
        UpsertReport,
    )
    from engine.runs import SyncRunRecord

__all__ = [
    "CRASH_ENV",
    "NOT_SUPPORTED",
    "PATIENT_TYPES",
    "REFERENCED_TYPES",
    "SCOPE_NOT_GRANTED",
    "BulkReport",
    "ConnectionBusyError",
    "ConnectionInfo",
    "ConnectionNotFoundError",
    "ConnectionNotSyncableError",
    "LandingReport",
    "NothingLandedError",
    "ReconcileReport",
    "SyncEnvironment",
    "SyncError",
    "SyncRunRecord",
    "TypeReport",
    "UpsertReport",
    "hold_connection",
    "land_resource_type",
    "load_connection",
    "reconcile_deletes",
    "run_bulk_export",
    "runs",
    "sync_references",
    "upsert_resource_type",
]

# Each public name's module, imported on first use (PEP 562): a command that reads one engine module
# (``engine.connection_snapshots`` for ``ehrsync connections list``) does not load pyarrow, DuckDB and the plugins.
_HOMES = {
    "runs": "",  # the submodule itself
    "run_bulk_export": "engine.bulk_export",
    "CRASH_ENV": "engine.checkpoints",
    "ConnectionInfo": "engine.connection_info",
    "load_connection": "engine.connection_info",
    "ConnectionBusyError": "engine.connection_lock",
    "hold_connection": "engine.connection_lock",
    "PATIENT_TYPES": "engine.connection_sync",
    "sync_references": "engine.connection_sync",
    "ReconcileReport": "engine.deletes",
    "reconcile_deletes": "engine.deletes",
    "SyncEnvironment": "engine.environment",
    "ConnectionNotFoundError": "engine.errors",
    "ConnectionNotSyncableError": "engine.errors",
    "NothingLandedError": "engine.errors",
    "SyncError": "engine.errors",
    "land_resource_type": "engine.incremental",
    "upsert_resource_type": "engine.incremental",
    "REFERENCED_TYPES": "engine.references",
    "NOT_SUPPORTED": "engine.reports",
    "SCOPE_NOT_GRANTED": "engine.reports",
    "BulkReport": "engine.reports",
    "LandingReport": "engine.reports",
    "TypeReport": "engine.reports",
    "UpsertReport": "engine.reports",
    "SyncRunRecord": "engine.runs",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
