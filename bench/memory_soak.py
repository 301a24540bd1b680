"""Memory of a long-lived syncing process (issue 14): RSS over many syncs in ONE process, and what grows.

``python -m bench.memory_soak --syncs 1000`` connects ``--connections`` sandbox patients (the sandbox runs in its
own process, so its memory is not counted) and syncs them over and over through the production path: the real
Dagster job in-process on an on-disk Dagster instance prepared as ``ehrsync`` prepares its own
(``prepare_dagster_home``: SQLite run and event storage in files). ``--mode batch`` runs ``incremental_sync_batch``
(``run_batch_now``, the scheduler's job) over all connections per run; ``--mode single`` runs one
``run_sync_now`` per connection (``ehrsync sync``), ``--full`` as full resyncs. After every ``--every`` syncs it
prints RSS, Python's traced heap (with ``--trace``), live objects and pyarrow's pool; at the end the slope of
RSS in MB per 100 syncs over the second half (least squares), and with ``--trace`` the allocation sites that
grew most between the half-way snapshot and the last one (tracemalloc, grouped by traceback).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import logging
import sys
import tempfile
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pyarrow as pa
from dagster import DagsterInstance

from bench.sandbox_process import SandboxProcess
from ehrsync.dagster_instance import prepare_dagster_home
from ehrsync.run_now import run_batch_now, run_sync_now
from engine.settings import PipelineSettings
from tests.engine.helpers import connect_patient, make_environment, sandbox_patients
from tests.engine.job_runs import world_resources, world_url

_MB = 1024 * 1024


class SoakError(RuntimeError):
    """A sync inside the soak failed, so its memory figures would mean nothing."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.memory_soak", description=__doc__.splitlines()[0])
    ap.add_argument("--syncs", type=int, default=1000, help="connection syncs in all (rounded up to whole runs)")
    ap.add_argument("--connections", type=int, default=20, help="sandbox patient connections synced in turn")
    ap.add_argument("--every", type=int, default=100, help="print a sample after every this many syncs")
    ap.add_argument("--mode", choices=("batch", "single"), default="batch", help="batch runs or one run per sync")
    ap.add_argument("--full", action="store_true", help="single mode: full resyncs instead of incremental ones")
    ap.add_argument("--trace", action="store_true", help="tracemalloc on (slower): report what grew, by traceback")
    ap.add_argument("--patients", type=int, default=25, help="patients the sandbox serves (small ones by default)")
    ap.add_argument("--workdir", type=Path, help="scratch folder (a fresh temporary one by default)")
    ap.add_argument("--json", type=Path, help="also write the samples and slope here")
    args = ap.parse_args(argv)
    if args.syncs < 1 or args.connections < 1 or args.every < 1:
        ap.error("--syncs, --connections and --every must be at least 1")
    if args.full and args.mode != "single":
        ap.error("--full needs --mode single (the batch job syncs incrementally)")
    return args


def sample(syncs: int) -> dict[str, Any]:
    """RSS, traced Python heap, live objects and pyarrow's pool after ``syncs`` syncs (after a full collection)."""
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] / _MB if tracemalloc.is_tracing() else None
    return {
        "syncs": syncs,
        "rss_mb": round(psutil.Process().memory_info().rss / _MB, 1),
        "traced_mb": None if traced is None else round(traced, 2),
        "objects": len(gc.get_objects()),
        "arrow_mb": round(pa.total_allocated_bytes() / _MB, 2),
        # alembic registers an exit callback (holding an ExitStack) each time Dagster's SQLite event log opens a
        # run's shard: the one growth left per run, upstream (docs/PERFORMANCE.md, issue 14)
        "atexit_callbacks": getattr(atexit, "_ncallbacks", lambda: None)(),
    }


def slope_per_100(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of (syncs, MB) in MB per 100 syncs; 0 with fewer than two distinct points."""
    n = len(points)
    if n < 2:
        return 0.0
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if var == 0 else 100 * sum((x - mx) * (y - my) for x, y in points) / var


def second_half_slopes(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    """Slopes of RSS, traced heap and objects (per 100 syncs) over the samples of the second half."""
    half = [s for s in samples if s["syncs"] >= samples[-1]["syncs"] / 2]
    out: dict[str, float | None] = {}
    for key in ("rss_mb", "traced_mb", "objects", "arrow_mb", "atexit_callbacks"):
        pts = [(s["syncs"], float(s[key])) for s in half if s[key] is not None]
        out[key] = round(slope_per_100(pts), 3) if pts else None
    return out


def _runner(args: argparse.Namespace, root: Path, sandbox: SandboxProcess, http: httpx.Client) -> Callable[[], int]:
    """One call = one run (batch of all connections, or the next connection's own run); returns syncs done."""
    world = make_environment(root / "world", http=http)
    patients = sandbox_patients(http, sandbox)
    ids = [
        connect_patient(world, sandbox, http=http, patient_id=patients[i % len(patients)])
        for i in range(args.connections)
    ]
    home = prepare_dagster_home(root / "dagster_home")
    instance = DagsterInstance.from_config(str(home))
    settings = PipelineSettings.from_env(
        {
            "EHRSYNC_STATE_DIR": str(root / "world"),
            "DATABASE_URL": world_url(world),
            "WAREHOUSE_URL": world.env.warehouse_target,
        }
    )
    resources, turn = world_resources(world), iter(range(sys.maxsize))

    def batch() -> int:
        result = run_batch_now(
            ids, "generic", settings=settings, instance=instance, resources=resources, console_log_level="WARNING"
        )
        if not result.success:
            raise SoakError(f"batch run {result.run_id} failed")
        return len(ids)

    def single() -> int:
        cid = ids[next(turn) % len(ids)]
        result = run_sync_now(
            cid, args.full, settings=settings, instance=instance, resources=resources, console_log_level="WARNING"
        )
        if not result.success:
            raise SoakError(f"run of {cid} failed: {result.step_errors}")
        return 1

    return batch if args.mode == "batch" else single


def top_growth(first: tracemalloc.Snapshot, last: tracemalloc.Snapshot, limit: int = 15) -> list[str]:
    """The allocation sites (tracebacks) whose live memory grew most between two snapshots."""
    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*")]
    stats = last.filter_traces(keep).compare_to(first.filter_traces(keep), "traceback")
    lines = []
    for stat in stats[:limit]:
        frames = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}" for f in stat.traceback[-6:]]
        lines.append(f"{stat.size_diff / 1024:+.1f} KiB {stat.count_diff:+d} blocks  " + " <- ".join(reversed(frames)))
    return lines


def top_types(before: Counter[str], after: Counter[str], limit: int = 12) -> list[str]:
    grown = {name: after[name] - before.get(name, 0) for name in after}
    return [f"{n:+d} {name}" for name, n in sorted(grown.items(), key=lambda kv: -kv[1])[:limit] if n > 0]


def type_counts() -> Counter[str]:
    gc.collect()
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def soak(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Sync until ``args.syncs``; samples every ``args.every`` syncs; growth report over the second half."""
    if args.trace:
        tracemalloc.start(12)
    with SandboxProcess(patients=args.patients) as sandbox, httpx.Client(timeout=60) as http:
        run_once = _runner(args, root, sandbox, http)
        done, samples, mid = 0, [sample(0)], None
        print(json.dumps(samples[0]), flush=True)
        while done < args.syncs:
            before = done
            done += run_once()
            if done // args.every != before // args.every or done >= args.syncs:
                samples.append(sample(done))
                print(json.dumps(samples[-1]), flush=True)
            if mid is None and done >= args.syncs / 2:
                mid = (tracemalloc.take_snapshot() if args.trace else None, type_counts())
        end = (tracemalloc.take_snapshot() if args.trace else None, type_counts())
    assert mid is not None
    return {
        "mode": args.mode + (" full" if args.full else ""),
        "connections": args.connections,
        "samples": samples,
        "slopes_per_100_syncs_second_half": second_half_slopes(samples),
        "types_grown_second_half": top_types(mid[1], end[1]),
        "sites_grown_second_half": top_growth(mid[0], end[0]) if mid[0] and end[0] else [],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ehrsync-soak-") as tmp:
        root = args.workdir or Path(tmp)
        report = soak(args, root)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
