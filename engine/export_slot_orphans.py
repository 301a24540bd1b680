"""Exports that hold an export slot with nobody polling them: a run that crashed, or failed on a polling hiccup,
leaves its job ``polling``, and until its connection's next run resumes it (or its 24 h deadline passes) every
other connection of the slot was refused, though the EHR may have finished that export long before.

Before a kick-off, a run asks the EHR once about each such job of its slot, with the job's own connection's grant
(Bulk Data's status request, BDX-09), when nothing else can be asking: no run of that connection is alive
(``engine.runs.process_gone``) and its connection lock is free (taken, without waiting, while asking). The answer
is recorded as the job's own run would record it: complete, the manifest is saved (the job moves to
``downloading``, and its connection's next run downloads the files: none is fetched or deleted here); gone
(404/410), ``abandoned``; failed, ``failed`` and its status URL deleted (BDX-11). Each frees the slot. Still in
progress, or no answer, the job keeps holding it: the EHR still counts that export. So does a job whose grant's
token is due a refresh another process is making, or whose status request is answered 401 while another process
refreshes the grant: the probe does not wait for that refresh (up to the refresh lock's 300 s) while it holds that
connection's lock, which that connection's own run waits 30 s for.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from connectors.bulk import BulkClient, BulkManifest
from connectors.errors import BulkExportError, BulkStatusUnavailableError, EhrSyncError
from engine import bulk_state
from engine.bulk_job_ends import record_manifest, record_refusal
from engine.bulk_state import JobView
from engine.connection_info import ConnectionInfo, load_connection
from engine.connection_lock import ConnectionBusyError, connection_lock
from engine.environment import SyncEnvironment
from engine.errors import SyncError
from engine.export_slot_tags import export_slot
from engine.export_slots import SlotExport, slot_exports
from engine.models import SyncRun
from engine.runs import process_gone
from store import AppDatabase, RefreshLockTimeoutError

__all__ = ["free_orphaned_exports"]

_log = logging.getLogger(__name__)


def free_orphaned_exports(env: SyncEnvironment, conn: ConnectionInfo, run_id: str) -> None:
    """Ask the EHR once about each export of ``conn``'s slot that nobody polls, and record its answer."""
    if export_slot(conn.provider_id, conn.client_id, conn.fhir_base) is None:
        return
    for export in slot_exports(env.db, conn, env.bulk_deadline_s):
        if _has_live_run(env.db, export.connection_id):
            continue
        try:
            with connection_lock(env.zone.root, export.connection_id, f"{run_id} (export slot)", wait_s=0.0):
                _ask_once(env, export)
        except ConnectionBusyError:
            continue  # a run of that connection is under way: it polls the job itself


def _has_live_run(db: AppDatabase, connection_id: str) -> bool:
    """A run of the connection is marked running by a process not known to be gone (it may be polling the job)."""
    with db.session() as session:
        owners = session.execute(
            select(SyncRun.owner_pid, SyncRun.owner_host).where(
                SyncRun.connection_id == connection_id, SyncRun.status == "running"
            )
        ).all()
    return any(not process_gone(pid, host) for pid, host in owners)


def _ask_once(env: SyncEnvironment, export: SlotExport) -> None:
    """One status request about the job, under its connection's lock; its answer recorded (ids and codes are logged,
    never what the server said)."""
    job = bulk_state.find_job(env.db, export.job_id)
    if job.status != "polling":  # a run of that connection got to it first
        return
    try:
        owner = load_connection(env.db, export.connection_id)
    except SyncError:
        return
    # the grant's token, refreshed when due or after a 401, without waiting on another process's refresh: that wait
    # (up to the refresh lock's 300 s) would hold this connection's lock, and its own run fails connection_busy
    client = env.bulk_client(owner, wait_for_lock=False)
    try:
        _ask_and_record(env, client, job, export)
    except bulk_state.JobMovedOnError:  # a run of that connection (another host's) recorded it while we asked
        _log.info("export slot: export %s of connection %s was recorded by its own run", job.id, export.connection_id)
    finally:
        client.close()


def _ask_and_record(env: SyncEnvironment, client: BulkClient, job: JobView, export: SlotExport) -> None:
    """The status request and its answer recorded, only while the job is still ``polling``: a record found moot
    raises JobMovedOnError, from the answer's branch or the refusal's handler alike (a sibling ``except`` clause
    would not catch it there)."""
    try:
        answer = client.check(job.status_url, cancel_on_abandon=False)
        if isinstance(answer, BulkManifest):
            record_manifest(env, job, answer, still="polling")
            _log.info(
                "export slot: export %s of connection %s was complete on the EHR with nobody polling it; its manifest "
                "is saved and that connection's next run downloads its files",
                job.id,
                export.connection_id,
            )
    except BulkStatusUnavailableError:
        return
    except BulkExportError as exc:
        if exc.status is None:
            return
        gone = record_refusal(env, client, job, exc, still="polling")
        _log.info(
            "export slot: export %s of connection %s, which nobody polled, is over on the EHR (HTTP %s): %s; that "
            "connection's next run exports again from its _since",
            job.id,
            export.connection_id,
            exc.status,
            "its status URL is gone, the job is abandoned"
            if gone
            else "it failed; the job is failed and its status URL deleted (DELETE, Bulk Data)",
        )
    except RefreshLockTimeoutError:  # the job keeps the slot, as for no answer; a later kick-off asks again
        _log.info(
            "export slot: export %s of connection %s not asked about: its grant is being refreshed",
            job.id,
            export.connection_id,
        )
    except EhrSyncError as exc:
        _log.info(
            "export slot: could not ask about export %s of connection %s: %s", job.id, export.connection_id, exc.code
        )
