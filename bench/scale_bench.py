"""Scale with the number of connections: seconds of machine time per incremental sync with nothing changed.

For each size (100 and 1,000 patient connections by default, one sandbox patient each), in one process:
  * seeding (not a result): the first, full sync of every connection by the engine alone, and each connection's
    Dagster partition added (the connections sensor's job in production), so only nothing-changed syncs are timed;
  * engine only: ``engine.batch_sync.sync_connection`` per connection (no Dagster at all): the baseline;
  * one untimed warm-up batch run (the process's first Dagster run pays imports and storage set-up once);
  * the fixed part of a batch run: ``fixed_runs`` batch runs of one connection (median);
  * Dagster, one run per connection (``run_sync_now``, the path before batches) for a sample of ``single_runs``;
  * Dagster batch runs: ``incremental_sync_batch`` through the real job in-process (``run_batch_now``) in runs of
    ``batch_size`` connections over every connection, on an on-disk Dagster instance (event log written as in
    production), each run's CPU logged as it ends.
Machine time is this process's CPU (user + sys, ``resource.getrusage``); the sandbox (the EHR) runs in its own
process and is not counted. Per connection sync: fixed part = a run's own cost (runs x fixed per run / connections),
variable part = the rest (the engine's work plus what the run adds per member).
"""

from __future__ import annotations

import logging
import resource
import shutil
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from dagster import DagsterEventType, DagsterInstance

from bench.http_meter import HttpMeter
from bench.sandbox_process import SandboxProcess
from ehrsync.run_now import run_batch_now, run_sync_now
from engine import runs
from engine.batch_sync import batch_sync_run_id, sync_connection
from engine.settings import PipelineSettings
from pipelines.defs._shared.partitions import partitions_name_for
from tests.engine.helpers import SyncWorld, connect_patient, make_environment, sandbox_patients
from tests.engine.job_runs import world_resources, world_url

_log = logging.getLogger(__name__)


_MATERIALIZED, _CHECKED = DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_CHECK_EVALUATION


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
        self.run_ids: list[str] = []  # the batch runs since the last ``asset_events``

    def batches(self, ids: Sequence[str]) -> None:
        """Batch runs over ``ids``; each run's CPU is logged as it ends (a long size shows its progress)."""
        for chunk in _chunks(ids, self.batch_size):
            cpu = _cpu()
            result = run_batch_now(
                chunk,
                "generic",
                settings=self.settings,
                instance=self.instance,
                resources=self.resources,
                console_log_level="WARNING",
            )
            if not result.success:
                raise ScaleBenchError(f"batch run {result.run_id} failed: {self._why(result.run_id, chunk)}")
            self.run_ids.append(result.run_id)
            _log.info("scale: batch run of %d connections: %.2f s CPU", len(chunk), _cpu() - cpu)

    def _why(self, run_id: str, ids: Sequence[str]) -> str:
        """What failed in a batch run: its members' own errors (their rows), else Dagster's step failure."""
        errors = []
        for cid in ids:
            row = runs.get(self.world.env.db, batch_sync_run_id(run_id, cid))
            if row is not None and row.status != "completed":
                errors.append(f"{cid}: {row.status} {row.error}")
        for entry in self.instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
            event = entry.dagster_event
            info = event.step_failure_data.error if event is not None and event.step_failure_data else None
            errors.append(f"step failure: {info.to_string()[:2000] if info else entry.message}")
        return "; ".join(errors) or "no member failed and no step failure was recorded"

    def asset_events(self) -> dict[str, int]:
        """Asset events the batch runs since the last call logged: a member's overhead is mostly their storage
        (each is written by the instance's event log on its own; read after the timing, so not counted)."""
        kinds = {"materializations": _MATERIALIZED, "check_evaluations": _CHECKED}
        counts = {name: sum(len(self.instance.all_logs(r, of_type=kind)) for r in self.run_ids)
                  for name, kind in kinds.items()}  # fmt: skip
        self.run_ids.clear()
        return counts

    def seed(self, ids: Sequence[str]) -> None:
        """The first, full sync of each connection by the engine alone, and its Dagster partition added."""
        self.engine_only(ids)
        name = partitions_name_for(is_bulk=False)
        self.instance.add_dynamic_partitions(name, [c for c in ids if not self.instance.has_dynamic_partition(name, c)])

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
    sandbox: SandboxProcess,
    workdir: Path,
    *,
    connections: int,
    batch_size: int = 50,
    single_runs: int = 20,
    fixed_runs: int = 3,
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
        _log.info("scale: %d connections, first sync by the engine alone (not timed)", len(ids))
        seed = _measure(meter, lambda: runner.seed(ids), len(ids))
        engine = _measure(meter, lambda: runner.engine_only(ids), len(ids))
        _log.info("scale: %d connections, engine only %.4f s CPU each", len(ids), _cpu_of(engine))
        runner.batches(ids[:1])  # warm-up: the process's first Dagster run
        # The short parts first, the batch runs over every connection last (a long size logs each run's CPU).
        ones = [_measure(meter, partial(runner.batches, ids[i : i + 1]), 1) for i in range(min(fixed_runs, len(ids)))]
        _log.info("scale: batch runs of one connection: %s s CPU", [m["cpu_s"] for m in ones])
        sample = ids[: min(single_runs, len(ids))]
        single = _measure(meter, lambda: runner.single_runs(sample), len(sample))
        _log.info("scale: one run per connection: %.3f s CPU each (%d runs)", _cpu_of(single), len(sample))
        runner.run_ids.clear()
        batch = _measure(meter, lambda: runner.batches(ids), len(ids))
        _log.info("scale: %d connections in batch runs: %.4f s CPU each", len(ids), _cpu_of(batch))
        batch["asset_events"] = runner.asset_events()
    return _summary(len(ids), batch_size, seed, engine, batch, single, ones)


def _cpu_of(measure: dict[str, Any]) -> float:
    return float(measure["cpu_s_per_connection"])


def _summary(
    count: int,
    batch_size: int,
    seed: dict[str, Any],
    engine: dict[str, Any],
    batch: dict[str, Any],
    single: dict[str, Any],
    ones: list[dict[str, Any]],
) -> dict[str, Any]:
    """Per connection sync, each path's CPU split into its fixed part (a run's own cost, shared by its members)
    and its variable part (the rest), next to the engine-only figure of the same run."""
    e, b, s = _cpu_of(engine), _cpu_of(batch), _cpu_of(single)
    runs = -(-count // batch_size)
    one = statistics.median(m["cpu_s"] for m in ones) if ones else b
    fixed_batch_run = max(one - e, 0.0)  # a batch run's own cost, paid once per run
    fixed_batch = runs * fixed_batch_run / count
    fixed_single_run = max(s - e, 0.0)
    overhead = b - fixed_batch - e
    events = sum(batch.get("asset_events", {}).values()) / count
    return {
        "connections": count,
        "batch_size": batch_size,
        "batch_runs": runs,
        "seed_engine_full_sync": seed,
        "engine_only": engine,
        "dagster_batch": batch,
        "dagster_single_runs": single,
        "dagster_batch_of_one": ones,
        "fixed_cpu_s_per_batch_run": round(fixed_batch_run, 3),
        "fixed_cpu_s_per_single_run": round(fixed_single_run, 3),
        "parts_cpu_s_per_connection": {
            "engine_only": {"fixed": 0.0, "variable": round(e, 4)},
            "dagster_batch": {"fixed": round(fixed_batch, 4), "variable": round(b - fixed_batch, 4)},
            "dagster_single_runs": {"fixed": round(fixed_single_run, 4), "variable": round(s - fixed_single_run, 4)},
        },
        "batch_overhead_cpu_s_per_connection": round(overhead, 4),  # what a batch adds per member
        "batch_asset_events_per_connection": round(events, 2),  # landing/warehouse materializations and checks
        # The overhead spread over those events (their storage is most of it; profile in docs/PERFORMANCE.md).
        "batch_overhead_cpu_ms_per_asset_event": round(1000 * overhead / events, 2) if events else None,
        "batch_vs_engine": round(b / e, 2) if e else None,
        "single_vs_engine": round(s / e, 2) if e else None,
        "target_met": b <= 1.0 and (e == 0 or b <= 3 * e),
    }


def table(results: list[dict[str, Any]]) -> str:
    """CPU seconds per connection sync (fixed + variable) and requests, per size and path."""
    lines = ["scale (incremental, nothing changed): CPU s per connection sync = fixed + variable; requests/conn"]
    for r in results:
        parts = r["parts_cpu_s_per_connection"]
        for name, label in (("engine_only", "engine only"), ("dagster_batch", f"batch runs of {r['batch_size']}"),
                            ("dagster_single_runs", "one run each")):  # fmt: skip
            m, p = r[name], parts[name]
            lines.append(
                f"{r['connections']} conns, {label} ({m['connections']} synced): {m['cpu_s_per_connection']} = "
                f"{p['fixed']} + {p['variable']}; wall {m['wall_s_per_connection']}; "
                f"requests {m['requests_per_connection']}"
            )
        per_event = r["batch_overhead_cpu_ms_per_asset_event"]
        lines.append(
            f"{r['connections']} conns: a batch adds {r['batch_overhead_cpu_s_per_connection']} s per member over "
            f"the engine, {r['batch_asset_events_per_connection']} asset events per member"
            + (f" ({per_event} ms each)" if per_event is not None else "")
        )
        lines.append(
            f"{r['connections']} conns: batch {r['batch_vs_engine']}x engine, one run each {r['single_vs_engine']}x"
            f" (target <= 1 s and <= 3x: {'met' if r['target_met'] else 'MISSED'})"
        )
    return "\n".join(lines)
