"""Bulk ``$export`` end to end: kick-off → poll → parallel downloads → Parquet → DuckDB upsert.

The sandbox runs in its own process; ehrsync's side runs in a spawned child that does nothing else
(``bench/bulk_child.py``, which imports neither the sandbox nor the baseline), so its ``ru_maxrss`` is ehrsync's
peak memory. A second child measures the raw floor on the same server in the same
run: plain httpx kick-off/poll/download (same parallelism) and DuckDB ``read_ndjson_objects`` of the files.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.baseline import raw_export
from bench.bulk_child import ehrsync_side
from bench.http_meter import HttpMeter
from bench.sandbox_process import SandboxProcess
from bench.world import WorldHandle
from tests.engine.helpers import connect_backend, make_environment

_log = logging.getLogger(__name__)


class BulkBenchError(RuntimeError):
    """The export through ehrsync did not complete, so its rate and memory would mean nothing."""


def _baseline_side(handle: WorldHandle, connection_id: str, fhir_base: str, concurrency: int) -> dict[str, Any]:
    """Child process: the raw floor on the same server and data (see ``bench.baseline``)."""
    with HttpMeter().client() as http:
        world = handle.reopen(http)
        token = world.env.vault.token_source(connection_id).get_token()
        out_dir = handle.root / "baseline-files"
        try:
            return raw_export(
                http, fhir_base, token, out_dir, concurrency=concurrency, db_path=handle.root / "raw.duckdb"
            )
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)


def _in_child(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh spawned process (its own peak RSS) and return its dict."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        result: dict[str, Any] = pool.apply(fn, args)
    return result


def run_bulk_bench(
    sandbox: SandboxProcess, workdir: Path, *, concurrency: int = 4, baseline: bool = True
) -> dict[str, Any]:
    """Export the whole ``sandbox`` with ehrsync (one child process), then measure the raw floor (another)."""
    root = workdir / "bulk"
    shutil.rmtree(root, ignore_errors=True)
    with HttpMeter().client() as http:
        world = make_environment(root, http=http)
        connection_id = connect_backend(world, sandbox, http=http)
    handle = WorldHandle.of(root, world)
    _log.info("bulk: exporting the sandbox at %s with ehrsync", sandbox.base_url)
    ehrsync = _in_child(ehrsync_side, handle, connection_id, concurrency)
    if ehrsync["status"] != "completed":
        raise BulkBenchError(f"ehrsync's bulk export ended {ehrsync['status']}: {ehrsync['error']}")
    _log.info("bulk: ehrsync took %.1fs", ehrsync["seconds"])
    if not baseline:
        return {"concurrency": concurrency, "ehrsync": ehrsync}
    raw = _in_child(_baseline_side, handle, connection_id, sandbox.fhir_base, concurrency)
    if raw["lines"] != ehrsync["resources_upserted"]:
        _log.warning("baseline read %d lines, ehrsync upserted %d", raw["lines"], ehrsync["resources_upserted"])
    return {"concurrency": concurrency, "ehrsync": ehrsync, "baseline": raw}
