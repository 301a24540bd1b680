"""The analyst views' cost on DuckDB and PostgreSQL: every view materialized, next to a hand-written baseline.

Run: ``python -m bench --only views [--view-patients N]`` or ``python -m bench.views [--patients N]``. N sandbox
patients (the sandbox's own generator, seed 7) are landed once and upserted into a DuckDB file and a throwaway
PostgreSQL (tests/pgserver.py; ``EHRSYNC_TEST_DATABASE_URL`` points it at an existing server). Each view is then
materialized with ``CREATE TEMP TABLE ... AS SELECT * FROM view`` (a ``count(*)`` would let the planner skip the
columns), best of ``--repeat`` runs, and so is the baseline of ``bench/views_baseline.py`` (the old hand-written
JSON-path extraction of ``patient`` and ``observation``) in the same run, because rates only compare within one.
The views are whatever the imported ``warehouse`` compiles: put another checkout first on ``PYTHONPATH`` to A/B
a compiler.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import psycopg

from bench.report import machine
from bench.views_baseline import BASELINE_VIEWS, baseline_sql
from sandbox.data.generator import Generator
from sandbox.data.ids import COMPARTMENT_TYPES
from warehouse import LandedFile, LandingZone, open_warehouse
from warehouse.views import VIEW_NAMES

logger = logging.getLogger("bench.views")
Execute = Callable[[str], None]


def land_patients(patients: int, root: Path) -> tuple[list[LandedFile], int]:
    """The generator's patients landed as one Parquet file per resource type; also the resource count."""
    gen = Generator(seed=7, patients=patients)
    by_type: dict[str, list[bytes]] = {}
    for index in range(patients):
        for res in gen.patient_resources(index, COMPARTMENT_TYPES):
            by_type.setdefault(res["resourceType"], []).append(orjson.dumps(res))
    zone = LandingZone(root)
    landed = []
    for rtype, lines in sorted(by_type.items()):
        with zone.writer("conn-bench", rtype, "run-1", f"https://ehr.example/fhir/{rtype}", "tenant-1") as w:
            for line in lines:
                w.add_line(line)
        landed.append(w.result)
    return landed, sum(len(v) for v in by_type.values())


def load(target: str, landed: list[LandedFile]) -> float:
    """Upsert every landed file and create the analyst views; seconds taken."""
    started = time.perf_counter()
    with open_warehouse(target) as wh:
        for lf in landed:
            wh.upsert(lf)
        wh.refresh_flat_tables()
    return time.perf_counter() - started


def materialize(execute: Execute, rows_of: Callable[[], int], select: str, repeat: int) -> dict[str, Any]:
    """Best of ``repeat`` ``CREATE TEMP TABLE AS`` of ``select``: seconds, rows and rows/s."""
    best = float("inf")
    rows = 0
    for _ in range(repeat):
        execute("DROP TABLE IF EXISTS bench_out")
        started = time.perf_counter()
        execute(f"CREATE TEMP TABLE bench_out AS {select}")
        best = min(best, time.perf_counter() - started)
        rows = rows_of()
    execute("DROP TABLE IF EXISTS bench_out")
    return {"seconds": round(best, 4), "rows": rows, "rows_per_s": round(rows / best) if best > 0 else None}


def time_backend(name: str, execute: Execute, rows_of: Callable[[], int], repeat: int) -> dict[str, Any]:
    """Every analyst view, then the baseline views, on one open connection."""
    views = {}
    for view in VIEW_NAMES:
        views[view] = materialize(execute, rows_of, f'SELECT * FROM "{view}"', repeat)
        logger.info("%s %s: %.3f s, %d rows", name, view, views[view]["seconds"], views[view]["rows"])
    baseline = {v: materialize(execute, rows_of, baseline_sql(v, name), repeat) for v in BASELINE_VIEWS}
    ratio = {v: round(views[v]["seconds"] / baseline[v]["seconds"], 2) for v in baseline}
    return {"views": views, "baseline": baseline, "compiled_vs_baseline": ratio}


def time_duckdb(path: Path, repeat: int) -> dict[str, Any]:
    con = duckdb.connect(str(path))
    try:

        def rows_of() -> int:
            row = con.execute("SELECT count(*) FROM bench_out").fetchone()
            return int(row[0]) if row else 0

        def execute(sql: str) -> None:
            con.execute(sql)

        return time_backend("duckdb", execute, rows_of, repeat)
    finally:
        con.close()


def time_postgres(dsn: str, repeat: int) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute("VACUUM ANALYZE fhir_resources")

        def rows_of() -> int:
            row = con.execute("SELECT count(*) FROM bench_out").fetchone()
            return int(row[0]) if row else 0

        def execute(sql: str) -> None:
            con.execute(sql)

        return time_backend("postgres", execute, rows_of, repeat)


@contextlib.contextmanager
def _postgres_dsn(skip: bool) -> Iterator[tuple[str, str] | None]:
    """(SQLAlchemy URL for the warehouse, libpq DSN for timing) of a fresh database, or None when skipped."""
    if skip:
        yield None
        return
    from tests.pgserver import create_database, throwaway_postgres

    with throwaway_postgres() as server:
        url = create_database(server, "bench_views")
        yield url, server.dsn("bench_views")


def run_views_bench(workdir: Path, *, patients: int, repeat: int = 3, postgres: bool = True) -> dict[str, Any]:
    """Land ``patients`` once, load DuckDB and PostgreSQL, time every view and the baseline on each."""
    workdir.mkdir(parents=True, exist_ok=True)
    landed, resources = land_patients(patients, workdir / "landing")
    out: dict[str, Any] = {"patients": patients, "resources": resources, "repeat": repeat}
    duck = workdir / "views.duckdb"
    out["duckdb"] = {"load_s": round(load(str(duck), landed), 2), **time_duckdb(duck, repeat)}
    with _postgres_dsn(not postgres) as pg:
        if pg is not None:
            out["postgres"] = {"load_s": round(load(pg[0], landed), 2), **time_postgres(pg[1], repeat)}
    return out


def table(result: dict[str, Any]) -> str:
    """Per backend and view: seconds and rows/s, then the baseline and the compiled/baseline ratio."""
    lines = [f"views: {result['patients']:,} patients, {result['resources']:,} resources, best of {result['repeat']}"]
    for backend in ("duckdb", "postgres"):
        b = result.get(backend)
        if not b:
            continue
        for label, views in (("view", b["views"]), ("BASELINE", b["baseline"])):
            for name, v in views.items():
                rate = f"{v['rows_per_s']:>10,} rows/s" if v["rows_per_s"] else ""
                lines.append(f"{backend:<8} {label:<8} {name:<28} {v['rows']:>8,} rows {v['seconds']:8.3f} s {rate}")
        for name, ratio in b["compiled_vs_baseline"].items():
            lines.append(f"{backend:<8} compiled/baseline {name:<19} {ratio:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.views", description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=200, help="sandbox patients loaded (1..10000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per view; the best is reported")
    ap.add_argument("--skip-postgres", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if not 1 <= args.patients <= 10_000 or args.repeat < 1:
        ap.error("--patients must be 1..10000 and --repeat >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="ehrsync-bench-views-") as tmp:
        result = run_views_bench(Path(tmp), patients=args.patients, repeat=args.repeat, postgres=not args.skip_postgres)
    result = {"command": " ".join(["python -m bench.views", *sys.argv[1:]]), "machine": machine(), **result}
    print(table(result))
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
