"""ehrsync's side of the Bulk benchmark, in a module of its own: the spawned child imports only this module, so its
peak memory is the engine's and the meters', not the sandbox server's or the baseline's (FastAPI, uvicorn and the
rest added ~13 MB to the child before any work, docs/PERFORMANCE.md)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench.http_meter import HttpMeter
from bench.memory import RssSampler, max_rss_mb
from bench.world import WorldHandle
from engine import run_bulk_export

__all__ = ["ehrsync_side"]


def ehrsync_side(handle: WorldHandle, connection_id: str, concurrency: int) -> dict[str, Any]:
    """Child process: one Bulk export through the production engine, timed and memory-sampled."""
    meter = HttpMeter()
    with meter.client() as http, RssSampler() as rss:
        world = handle.reopen(http)
        world.env.bulk_concurrency = concurrency
        world.env.vault.token_source(connection_id).get_token()  # auth is not the export's cost
        start, cpu_start = time.perf_counter(), time.process_time()
        report = run_bulk_export(world.env, connection_id, f"bench-{uuid.uuid4().hex[:8]}")
        seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    manifest_at = meter.first_seen.get("response:bulk/status:200")
    upserted = sum(t.created + t.updated + t.unchanged for t in report.types.values())
    return {
        "status": report.status,
        "error": report.error,
        "seconds": seconds,
        # the child's CPU over the export (every thread: downloads, landing, DuckDB's), steadier than the wall
        # clock on a shared machine for comparing two trees
        "cpu_s": cpu_s,
        "resources_upserted": upserted,
        "resources_per_s": upserted / seconds if seconds else 0.0,
        "files": report.files,
        "bytes": report.bytes,
        "by_type": {t: r.created + r.updated + r.unchanged for t, r in sorted(report.types.items())},
        "quarantined": sum(t.quarantined for t in report.types.values()),
        "server_generation_s": (manifest_at - start) if manifest_at else None,
        "requests": dict(meter.requests),
        "peak_rss_mb": max_rss_mb(),
        "sampled_peak_rss_mb": rss.peak_mb,
        "rss_at_start_mb": rss.start_mb,
        # the engine's defaults on this machine, so a result file says what ran (engine.cores)
        "landing_slots": world.env.bulk_landing_concurrency,
        "duckdb_threads": world.env.step_duckdb_threads(),
    }
