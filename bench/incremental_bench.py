"""Incremental sync cost when ~1% of resources changed, against the full sync of the same connections.

Patient connections are synced by production's Dagster jobs, in-process (``run_sync_now`` through the test
world's resources), in this order: full resync, an incremental sync with nothing changed (the fixed floor: one
search per type per connection), then ``mutate`` updates ~1% of the resources the full sync stored, restricted
to the connected patients, and a last incremental sync. Every HTTP request the engine sends is counted by an
httpx event hook; the seconds include Dagster's own work per run.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from bench.http_meter import HttpMeter
from bench.sandbox_process import SandboxProcess
from sandbox.admin_client import SandboxAdmin
from tests.engine.helpers import SyncWorld, connect_patient, make_environment, sandbox_patients
from tests.engine.job_runs import SyncRun, run_sync

_log = logging.getLogger(__name__)


class IncrementalBenchError(RuntimeError):
    """A sync inside the benchmark failed, so its numbers would mean nothing."""


def _phase(world: SyncWorld, meter: HttpMeter, connections: list[str], *, full: bool) -> dict[str, Any]:
    """Sync every connection once; requests, seconds and what the warehouse saw."""
    meter.reset()
    start = time.perf_counter()
    reports: list[SyncRun] = [run_sync(world, c, full=full, console_log_level="WARNING") for c in connections]
    seconds = time.perf_counter() - start
    failed = [f"{r.result.connection_id}: {r.error or r.failed_types}" for r in reports if r.status != "completed"]
    if failed:
        raise IncrementalBenchError(f"{'full' if full else 'incremental'} sync failed: {failed[0]}")
    types = [t for r in reports for t in r.types.values()]
    return {
        "seconds": seconds,
        "requests": meter.total,
        "requests_by_kind": dict(sorted(meter.requests.items())),
        "fetched": sum(t.fetched for t in types),
        "created": sum(t.created for t in types),
        "updated": sum(t.updated for t in types),
        "unchanged": sum(t.unchanged for t in types),
    }


def run_incremental_bench(
    sandbox: SandboxProcess, workdir: Path, *, connections: int, change_ratio: float = 0.01, seed: int = 11
) -> dict[str, Any]:
    """Full, no-change and ~``change_ratio`` incremental syncs of ``connections`` patient connections."""
    if connections < 1 or not 0 < change_ratio <= 1:
        raise ValueError(f"need connections >= 1 and 0 < change_ratio <= 1, got {connections}, {change_ratio}")
    root = workdir / "incremental"
    shutil.rmtree(root, ignore_errors=True)
    meter = HttpMeter()
    admin = SandboxAdmin(sandbox.base_url)
    with meter.client() as http:
        try:
            world = make_environment(root, http=http)
            patients = sandbox_patients(http, sandbox)[:connections]
            conn_ids = [connect_patient(world, sandbox, http=http, patient_id=p) for p in patients]
            _log.info("incremental: %d patient connections, full sync", len(conn_ids))
            full = _phase(world, meter, conn_ids, full=True)
            stored = full["created"] + full["updated"] + full["unchanged"]
            floor = _phase(world, meter, conn_ids, full=False)
            to_change = max(1, math.ceil(stored * change_ratio))
            changed = admin.mutate(update=to_change, seed=seed, patients=patients)
            _log.info("incremental: %d of %d resources updated, incremental sync", len(changed["updated"]), stored)
            incremental = _phase(world, meter, conn_ids, full=False)
        finally:
            admin.close()
    return {
        "connections": len(conn_ids),
        "resources_stored": stored,
        "resources_changed": len(changed["updated"]),
        "full": full,
        "no_change": floor,
        "incremental": incremental,
        "requests_ratio": incremental["requests"] / full["requests"] if full["requests"] else None,
        "seconds_ratio": incremental["seconds"] / full["seconds"] if full["seconds"] else None,
        "extra_requests_for_changes": incremental["requests"] - floor["requests"],
    }
