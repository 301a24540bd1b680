"""Scale with the number of connections: seconds of machine time per incremental sync with nothing changed.

For each size (e.g. 100 and 1,000 patient connections, one sandbox patient each), in one process:
  * engine only: ``engine.batch_sync.sync_connection`` per connection (no Dagster at all);
  * Dagster batch runs: ``incremental_sync_batch`` through the real job in-process (``run_batch_now``) in runs of
    ``batch_size`` connections, on an on-disk Dagster instance (event log written as in production);
  * Dagster, one run per connection (``run_sync_now``) for the first ``single_runs`` connections, for comparison.
Machine time is this process's CPU (user + sys, ``resource.getrusage``); the sandbox (the EHR) runs in its own
process and is not counted. Per connection: fixed part = what a run adds once (single run − engine), variable
part = what a batch run adds per member on top of the engine's own work. The fixed part of a batch run is
measured by a batch run of one connection (its CPU minus the engine's per-connection figure); a run per
connection pays the fixed part of the per-type job (single run − engine) for every connection.
"""

from __future__ import annotations

import logging
import resource
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dagster import DagsterInstance

from bench.http_meter import HttpMeter
from bench.sandbox_process import SandboxProcess
from ehrsync.run_now import run_batch_now, run_sync_now
from engine.batch_sync import sync_connection
from engine.settings import PipelineSettings
from tests.engine.helpers import SyncWorld, connect_patient, make_environment, sandbox_patients
from tests.engine.job_runs import world_resources, world_url

_log = logging.getLogger(__name__)


class ScaleBenchError(RuntimeError):
    """A sync inside the benchmark failed, so its numbers would mean nothing."""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(meter: HttpMeter, work: Callable[[], None], count: int) -> dict[str, Any]:
    meter.reset()
    cpu, wall = _cpu(), time.perf_counter()
    work()
    cpu, wall = _cpu() - cpu, time.perf_counter() - wall
    return {
        "connections": count,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "cpu_s_per_connection": round(cpu / count, 4),
        "wall_s_per_connection": round(wall / count, 4),
        "requests_per_connection": round(meter.total / count, 2),
        "requests_by_kind": dict(sorted(meter.requests.items())),
    }


def _settings(world: SyncWorld) -> PipelineSettings:
    return PipelineSettings.from_env(
        {
            "EHRSYNC_STATE_DIR": str(Path(world.env.zone.root).parent),
            "DATABASE_URL": world_url(world),
            "WAREHOUSE_URL": world.env.warehouse_target,
        }
    )


def _chunks(ids: Sequence[str], size: int) -> list[list[str]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


class _Runner:
    """The three ways of syncing the same connections, against one world and one Dagster instance."""

    def __init__(self, world: SyncWorld, instance: DagsterInstance, batch_size: int) -> None:
        self.world, self.instance, self.batch_size = world, instance, batch_size
        self.settings, self.resources = _settings(world), world_resources(world)

    def batches(self, ids: Sequence[str]) -> None:
        for chunk in _chunks(ids, self.batch_size):
            result = run_batch_now(
                chunk,
                "generic",
                settings=self.settings,
                instance=self.instance,
                resources=self.resources,
                console_log_level="WARNING",
            )
            if not result.success:
                raise ScaleBenchError(f"batch run {result.run_id} failed")

    def engine_only(self, ids: Sequence[str]) -> None:
        run = uuid.uuid4().hex
        for cid in ids:
            outcome = sync_connection(self.world.env, cid, run)
            if not outcome.succeeded:
                raise ScaleBenchError(f"engine sync of {cid} failed: {outcome.error or outcome.skipped}")

    def single_runs(self, ids: Sequence[str]) -> None:
        for cid in ids:
            result = run_sync_now(
                cid,
                settings=self.settings,
                instance=self.instance,
                resources=self.resources,
                console_log_level="WARNING",
            )
            if not result.success:
                raise ScaleBenchError(f"run of {cid} failed: {result.failed_steps}")


def run_scale_bench(
    sandbox: SandboxProcess, workdir: Path, *, connections: int, batch_size: int = 50, single_runs: int = 10
) -> dict[str, Any]:
    """Nothing-changed incremental syncs of ``connections`` connections: engine only, batch runs, single runs."""
    root = workdir / f"scale-{connections}"
    shutil.rmtree(root, ignore_errors=True)
    meter = HttpMeter()
    (root / "dagster").mkdir(parents=True)
    with meter.client() as http, DagsterInstance.local_temp(str(root / "dagster")) as instance:
        world = make_environment(root, http=http)
        patients = sandbox_patients(http, sandbox)[:connections]
        ids = [connect_patient(world, sandbox, http=http, patient_id=p) for p in patients]
        runner = _Runner(world, instance, batch_size)
        _log.info("scale: %d connections, first sync in batch runs", len(ids))
        first = _measure(meter, lambda: runner.batches(ids), len(ids))
        engine = _measure(meter, lambda: runner.engine_only(ids), len(ids))
        batch = _measure(meter, lambda: runner.batches(ids), len(ids))
        one = _measure(meter, lambda: runner.batches(ids[:1]), 1)
        few = ids[: min(single_runs, len(ids))]
        single = _measure(meter, lambda: runner.single_runs(few), len(few))
    return _summary(len(ids), batch_size, first, engine, batch, single, one)


def _summary(
    count: int,
    batch_size: int,
    first: dict[str, Any],
    engine: dict[str, Any],
    batch: dict[str, Any],
    single: dict[str, Any],
    one: dict[str, Any],
) -> dict[str, Any]:
    e, b, s = engine["cpu_s_per_connection"], batch["cpu_s_per_connection"], single["cpu_s_per_connection"]
    runs = -(-count // batch_size)
    fixed_per_run = max(one["cpu_s"] - e, 0.0)  # a batch run's own cost, paid once per run
    variable = (batch["cpu_s"] - runs * fixed_per_run) / count - e
    return {
        "connections": count,
        "batch_size": batch_size,
        "first_sync_batches": first,
        "engine_only": engine,
        "dagster_batch": batch,
        "dagster_single_runs": single,
        "dagster_batch_of_one": one,
        "fixed_cpu_s_per_batch_run": round(fixed_per_run, 3),
        "fixed_cpu_s_per_single_run": round(max(s - e, 0.0), 3),
        "batch_overhead_cpu_s_per_connection": round(variable, 4),
        "batch_vs_engine": round(b / e, 2) if e else None,
        "single_vs_engine": round(s / e, 2) if e else None,
        "target_met": b <= 1.0 and (e == 0 or b <= 3 * e),
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = ["scale (incremental, nothing changed) | engine s/conn | batch s/conn | single-run s/conn | req/conn"]
    for r in results:
        e, b, s = r["engine_only"], r["dagster_batch"], r["dagster_single_runs"]
        lines.append(
            f"{r['connections']} conns, batch {r['batch_size']}: cpu {e['cpu_s_per_connection']} / "
            f"{b['cpu_s_per_connection']} / {s['cpu_s_per_connection']}; wall {e['wall_s_per_connection']} / "
            f"{b['wall_s_per_connection']} / {s['wall_s_per_connection']}; requests {b['requests_per_connection']}"
            f" (target {'met' if r['target_met'] else 'MISSED'})"
        )
    return "\n".join(lines)
