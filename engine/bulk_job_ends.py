"""How a Bulk job's status answer is recorded, whoever asked: the run polling it (``engine.bulk_jobs``) or a run of
another connection of the same export slot asking once about a job nobody polls (``engine.export_slot_orphans``)."""

from __future__ import annotations

import logging
from typing import Any

from connectors.bulk import BulkClient, BulkManifest
from connectors.errors import BulkExportError, EhrSyncError
from engine import bulk_state
from engine.bulk_state import JobView
from engine.checkpoints import checkpoint
from engine.environment import SyncEnvironment

__all__ = ["cancel_quietly", "record_manifest", "record_refusal"]

_log = logging.getLogger(__name__)


def cancel_quietly(client: BulkClient, job: JobView) -> None:
    """BDX-11: ``DELETE`` the status URL once landed or abandoned, so the server may free the files."""
    try:
        client.cancel(job.status_url)
    except EhrSyncError as exc:
        _log.info("could not delete the status URL of bulk job %s: %s", job.id, exc.code)


def record_manifest(env: SyncEnvironment, job: JobView, manifest: BulkManifest, *, still: str | None = None) -> JobView:
    """Store the complete export's manifest and one row per file: the job moves to ``downloading`` and its
    connection's next run downloads the files (none is fetched or deleted here). ``still``: only if the job's status
    is still that (``bulk_state.JobMovedOnError`` otherwise)."""
    files = [
        bulk_state.ManifestFile(kind, item.type, item.url, item.count)
        for kind, items in (("output", manifest.output), ("error", manifest.error), ("deleted", manifest.deleted))
        for item in items
    ]
    bulk_state.save_manifest(
        env.db,
        job.id,
        transaction_time=manifest.transaction_time,
        requires_access_token=manifest.requires_access_token,
        manifest=_manifest_json(manifest),
        files=files,
        still=still,
    )
    checkpoint("bulk.manifest_saved")
    return bulk_state.find_job(env.db, job.id)


def record_refusal(
    env: SyncEnvironment, client: BulkClient, job: JobView, exc: BulkExportError, *, still: str | None = None
) -> bool:
    """The server says the job is over without a manifest: 404/410 (the status URL is gone) ends it ``abandoned``
    and returns True (a new export may start from the same ``_since``); any other failure ends it ``failed`` and
    deletes its status URL (BDX-11: the server may free what it holds), returning False. ``still``: as for
    ``record_manifest``."""
    if exc.status in (404, 410):
        bulk_state.set_job_status(env.db, job.id, "abandoned", "status URL gone", still=still)
        return True
    bulk_state.set_job_status(env.db, job.id, "failed", str(exc), still=still)
    cancel_quietly(client, job)
    return False


def _manifest_json(m: BulkManifest) -> dict[str, Any]:
    def items(xs: list[Any]) -> list[dict[str, Any]]:
        return [{"type": i.type, "url": i.url, "count": i.count} for i in xs]

    return {
        "transactionTime": m.transaction_time.isoformat(),
        "request": m.request,
        "requiresAccessToken": m.requires_access_token,
        "output": items(m.output),
        "error": items(m.error),
        "deleted": items(m.deleted),
        "extension": m.extension,
    }
