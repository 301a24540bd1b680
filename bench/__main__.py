"""``python -m bench`` (``make bench``): Bulk export end to end, incremental sync cost, the analyst views' cost
(bench/views.py), the PostgreSQL upsert, and the cost per connection sync at 100 and 1,000 connections through
Dagster (bench/scale_bench.py, last), each with its baseline from the same run.

Default sizes are issue 5's (10,000 patients); ``--quick`` runs small sizes in well under a minute. Results
are printed as a table and written to ``var/bench/results-<UTC time>.json`` (and ``var/bench/latest.json``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.bulk_bench import run_bulk_bench
from bench.incremental_bench import run_incremental_bench
from bench.pg_upsert import run_pg_upsert_bench
from bench.pg_upsert import table as pg_table
from bench.report import machine, table, verdicts
from bench.sandbox_process import SandboxProcess
from bench.scale_bench import run_scale_bench
from bench.scale_bench import table as scale_table
from bench.views import run_views_bench
from bench.views import table as views_table

QUICK = {"patients": 100, "connections": 2, "view_patients": 50, "pg_rows": 20_000}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=10_000, help="sandbox patients exported in bulk (max 10,000)")
    ap.add_argument("--connections", type=int, default=10, help="patient connections in the incremental benchmark")
    ap.add_argument("--change-ratio", type=float, default=0.01, help="share of stored resources mutate updates")
    ap.add_argument("--concurrency", type=int, default=4, help="parallel Bulk file downloads (the engine's default)")
    ap.add_argument(
        "--memory-sizes",
        default="",
        help="extra patient counts (comma-separated) exported by ehrsync only, to show how peak memory scales "
        "(default: --patients/10 and --patients/3 on a full run, none with --quick)",
    )
    ap.add_argument("--quick", action="store_true", help=f"small sizes: {QUICK}")
    ap.add_argument(
        "--view-patients",
        type=int,
        help="sandbox patients loaded for the views benchmark (default: --patients, at most 1,000)",
    )
    ap.add_argument(
        "--pg-rows",
        type=int,
        help="stored rows (and batch rows) of the PostgreSQL upsert benchmark (default: 1,000,000 with "
        "--patients 10000, else 100 x --patients)",
    )
    ap.add_argument("--only", choices=("bulk", "incremental", "views", "pg-upsert", "scale"), help="run one benchmark")
    ap.add_argument(
        "--scale-connections",
        help="patient connection counts of the scale benchmark (comma-separated; default 100,1000, --quick 20; "
        "'' skips it)",
    )
    ap.add_argument("--scale-batch", type=int, default=50, help="connections per batch run in the scale benchmark")
    ap.add_argument(
        "--scale-single", type=int, default=20, help="sample of connections synced one Dagster run each (fixed part)"
    )
    ap.add_argument(
        "--scale-fixed-runs", type=int, default=3, help="batch runs of one connection timed (a batch run's fixed part)"
    )
    ap.add_argument("--out", type=Path, default=Path("var/bench"), help="folder for the JSON results")
    ap.add_argument("--workdir", type=Path, help="scratch folder (a fresh temporary one by default)")
    args = ap.parse_args(argv)
    if args.quick:
        args.patients, args.connections = QUICK["patients"], QUICK["connections"]
        args.view_patients = args.view_patients or QUICK["view_patients"]
        args.pg_rows = args.pg_rows or QUICK["pg_rows"]
    if args.pg_rows is None:
        args.pg_rows = 1_000_000 if args.patients == 10_000 else 100 * args.patients
    if args.pg_rows < 10:
        ap.error(f"--pg-rows must be at least 10, got {args.pg_rows}")
    if args.view_patients is None:
        args.view_patients = min(args.patients, 1_000)
    if not 1 <= args.view_patients <= 10_000:
        ap.error(f"--view-patients must be 1..10000, got {args.view_patients}")
    if not 1 <= args.patients <= 10_000:
        ap.error(f"--patients must be 1..10000 (the sandbox's range), got {args.patients}")
    if not 1 <= args.connections <= args.patients:
        ap.error(f"--connections must be 1..--patients, got {args.connections}")
    if not 0 < args.change_ratio <= 1:
        ap.error(f"--change-ratio must be in (0, 1], got {args.change_ratio}")
    if args.concurrency < 1:
        ap.error(f"--concurrency must be >= 1, got {args.concurrency}")
    try:
        sizes = [int(x) for x in args.memory_sizes.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--memory-sizes must be comma-separated integers, got {args.memory_sizes!r}")
    if not args.memory_sizes and not args.quick:
        sizes = sorted({max(1, args.patients // 10), max(1, args.patients // 3)} - {args.patients})
    if any(not 1 <= n <= 10_000 for n in sizes):
        ap.error(f"--memory-sizes must each be 1..10000, got {sizes}")
    args.memory_sizes = sizes
    try:
        scale = [int(x) for x in _scale_default(args).split(",") if x.strip()]
    except ValueError:
        ap.error(f"--scale-connections must be comma-separated integers, got {args.scale_connections!r}")
    if any(not 1 <= n <= 10_000 for n in scale):
        ap.error(f"--scale-connections must each be 1..10000, got {scale}")
    if min(args.scale_batch, args.scale_single, args.scale_fixed_runs) < 1:
        ap.error("--scale-batch, --scale-single and --scale-fixed-runs must each be at least 1")
    args.scale_connections = scale
    return args


def _scale_default(args: argparse.Namespace) -> str:
    if args.scale_connections is not None:
        return str(args.scale_connections)
    return "20" if args.quick else "100,1000"


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every benchmark (or ``--only`` one): PostgreSQL upsert, views, then bulk (unmutated data) and incremental
    against one sandbox process, then the scale benchmark (its own sandbox per size)."""
    results: dict[str, Any] = {
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "machine": machine(),
        "sizes": {"patients": args.patients, "connections": args.connections, "change_ratio": args.change_ratio},
    }
    started = time.perf_counter()
    if args.only in (None, "pg-upsert"):
        results["pg_upsert"] = run_pg_upsert_bench(workdir / "pg-upsert", rows=args.pg_rows)
    if args.only == "pg-upsert":
        results["wall_s"] = time.perf_counter() - started
        return results
    if args.only in (None, "views"):
        results["views"] = run_views_bench(workdir / "views", patients=args.view_patients)
    if args.only == "views":
        results["wall_s"] = time.perf_counter() - started
        return results
    if args.only in (None, "bulk", "incremental"):
        with SandboxProcess(patients=args.patients) as sandbox:
            if args.only in (None, "bulk"):
                results["bulk"] = run_bulk_bench(sandbox, workdir, concurrency=args.concurrency)
            if args.only in (None, "incremental"):
                results["incremental"] = run_incremental_bench(
                    sandbox, workdir, connections=args.connections, change_ratio=args.change_ratio
                )
    if args.only in (None, "bulk") and args.memory_sizes:
        results["bulk_memory_scaling"] = memory_scaling(args, workdir, results.get("bulk"))
    if args.only in (None, "scale") and args.scale_connections:  # last: after every other part, in this process
        results["scale"] = scale_points(args, workdir)
    results["verdicts"] = verdicts(results)
    results["wall_s"] = time.perf_counter() - started
    return results


def scale_points(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """The scale benchmark at each connection count (a sandbox with one patient per connection)."""
    points = []
    for count in args.scale_connections:
        with SandboxProcess(patients=count) as sandbox:
            points.append(
                run_scale_bench(
                    sandbox,
                    workdir,
                    connections=count,
                    batch_size=args.scale_batch,
                    single_runs=args.scale_single,
                    fixed_runs=args.scale_fixed_runs,
                )
            )
        # Each size's result as soon as it is known: a run stopped during the next (longer) size keeps it.
        logging.getLogger("bench.scale").info("scale result: %s", orjson.dumps(points[-1]).decode())
    return points


def memory_scaling(args: argparse.Namespace, workdir: Path, main_run: dict[str, Any] | None) -> list[dict[str, Any]]:
    """ehrsync's peak RSS exporting each extra size (its own sandbox each), next to the main run's."""
    points = []
    for patients in args.memory_sizes:
        with SandboxProcess(patients=patients) as sandbox:
            run_ = run_bulk_bench(sandbox, workdir / f"mem-{patients}", concurrency=args.concurrency, baseline=False)
        points.append(_point(patients, run_["ehrsync"]))
    if main_run is not None:
        points.append(_point(args.patients, main_run["ehrsync"]))
    return sorted(points, key=lambda p: p["patients"])


def _point(patients: int, ehrsync: dict[str, Any]) -> dict[str, Any]:
    keys = ("resources_upserted", "resources_per_s", "peak_rss_mb")
    return {"patients": patients, **{k: ehrsync[k] for k in keys}}


def write_results(results: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    data = orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    path = out / f"results-{stamp}.json"
    path.write_bytes(data)
    (out / "latest.json").write_bytes(data)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("bench").setLevel(logging.INFO)
    if args.workdir is not None:
        results = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="ehrsync-bench-") as tmp:
            results = run(args, Path(tmp))
    print(table(results))
    if "views" in results:
        print(views_table(results["views"]))
    if "pg_upsert" in results:
        print(pg_table(results["pg_upsert"]))
    if "scale" in results:
        print(scale_table(results["scale"]))
    print(f"results: {write_results(results, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
