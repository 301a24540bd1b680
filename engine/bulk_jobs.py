"""The job side of a Bulk export: kick-off (saved before the first poll, BDX-08), polling to a stored manifest,
and cancelling (``DELETE``, BDX-11) only jobs ehrsync abandons: a polling hiccup leaves the job resumable.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.bulk import BulkClient, BulkStatus, ExportLevel
from connectors.errors import BulkExportError, BulkStatusUnavailableError, SecurityPolicyError
from engine import bulk_state
from engine.bulk_job_ends import record_manifest, record_refusal
from engine.bulk_members import ExportSpec
from engine.bulk_state import JobView
from engine.checkpoints import checkpoint
from engine.connection_info import ConnectionInfo
from engine.environment import SyncEnvironment
from engine.export_slot_orphans import free_orphaned_exports
from engine.export_slots import claim_slot

BulkProgress = Callable[[str, dict[str, Any]], None]


def kickoff(
    env: SyncEnvironment,
    conn: ConnectionInfo,
    client: BulkClient,
    run_id: str,
    level: ExportLevel,
    group_id: str | None,
    spec: ExportSpec,
    since: datetime | None,
) -> JobView:
    """Kick off the export and record it before anything polls it (BDX-08); a vendor with one export per client and
    tenant is not asked while another kick-off or export of that slot is under way (``engine.export_slots``): the
    slot is claimed for the kick-off, atomically across processes, and the saved job holds it after."""
    free_orphaned_exports(env, conn, run_id)
    with claim_slot(env, conn, run_id):
        extra = [("_elements", ",".join(spec.elements))] if spec.elements else []
        status_url = client.kickoff(
            level,
            group_id=group_id,
            types=spec.types or None,
            since=since,
            patients=list(spec.patients) or None,
            extra_params=extra,
        )
        params: dict[str, Any] = {"_type": ",".join(spec.types), "_since": since.isoformat() if since else None}
        if spec.patients:
            params["patient"] = list(spec.patients)
        if spec.elements:
            params["_elements"] = list(spec.elements)
        job = bulk_state.save_job(
            env.db,
            connection_id=conn.id,
            run_id=run_id,
            stream=spec.stream,
            type_key=spec.key,
            level=level,
            group_id=group_id,
            types=spec.types,
            since=since,
            kickoff_url=client.kickoff_url(level, group_id),
            status_url=status_url,
            params=params,
        )
    checkpoint("bulk.kicked_off")
    return job


def await_manifest(
    env: SyncEnvironment, client: BulkClient, job: JobView, progress: BulkProgress | None
) -> JobView | None:
    def on_progress(status: BulkStatus) -> None:
        if progress is not None:
            progress("bulk.polling", {"job_id": job.id, "progress": status.progress})

    try:
        manifest = client.wait(
            job.status_url, deadline_s=_deadline_left(env, job), on_progress=on_progress, cancel_on_abandon=False
        )
    except BulkStatusUnavailableError:
        raise  # a polling hiccup, however long: the job stays ``polling`` and the next run polls the same URL
    except SecurityPolicyError as exc:  # a status URL the token may not go to (saved before kick-off checked it)
        bulk_state.set_job_status(env.db, job.id, "failed", str(exc))
        raise
    except BulkExportError as exc:
        if record_refusal(env, client, job, exc):
            return None
        raise  # BDX-11: an abandoned job (deadline, invalid manifest, failed) was deleted
    return record_manifest(env, job, manifest)


def _deadline_left(env: SyncEnvironment, job: JobView) -> float:
    """The job's deadline counts from its kick-off, across runs that resume it (BDX-10)."""
    if job.requested_at is None:
        return env.bulk_deadline_s
    elapsed = (datetime.now(UTC) - job.requested_at.astimezone(UTC)).total_seconds()
    return max(0.0, env.bulk_deadline_s - max(0.0, elapsed))


#: A transactionTime later than this host's time when the kick-off was accepted shows the server's clock ahead:
#: the next ``_since`` is then that time less this margin, which covers the kick-off's round trip.
CLOCK_AHEAD_MARGIN = timedelta(minutes=1)


def next_since(job: JobView) -> tuple[datetime | None, str | None]:
    """The ``_since`` a completed job stores (BDX-14), and a warning when the server's clock was ahead (BDX-27).

    The server's ``transactionTime``, unless it is later than when this host saw the kick-off accepted: a server
    clock that ran ahead and is then set right would otherwise leave a ``_since`` past its next changes, skipped
    for good with every run completing. A lower ``_since`` only exports some changes again.
    """
    stamped, accepted = job.transaction_time, job.requested_at
    if stamped is None or accepted is None or stamped <= accepted:
        return stamped, None
    bounded = accepted - CLOCK_AHEAD_MARGIN
    ahead = int((stamped - accepted).total_seconds())
    if ahead < CLOCK_AHEAD_MARGIN.total_seconds():  # a clock a little ahead: said only when it is far ahead
        return bounded, None
    return bounded, (
        f"the server's transactionTime is {ahead}s after this host saw the kick-off accepted: _since is this "
        "host's time less a minute, so changes the server stamps once its clock is set right are still exported"
    )
