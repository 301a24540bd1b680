"""Micro-benchmark of the warehouse hot paths on this machine: NDJSON landing, DuckDB and PostgreSQL upserts.

Run: ``.venv/bin/python -m bench.warehouse_bench [--rows 200000] [--postgres-url URL]``. Without a URL a throwaway
PostgreSQL is started (tests/pgserver.py). Prints rows/s per stage and the orjson baseline of the same data,
because rates only compare within one run (see shared/environment.md).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import orjson

from warehouse import LandingZone, land_ndjson_file, open_warehouse


def _write_ndjson(path: Path, rows: int, version: int) -> None:
    with path.open("wb") as fh:
        for i in range(rows):
            fh.write(
                orjson.dumps(
                    {
                        "resourceType": "Observation",
                        "id": f"o{i}",
                        "meta": {"versionId": str(version), "lastUpdated": f"2026-01-0{version}T03:04:05.123Z"},
                        "status": "final",
                        "category": [{"coding": [{"code": "vital-signs"}]}],
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
                        "subject": {"reference": f"Patient/p{i % 1000}"},
                        "effectiveDateTime": "2026-01-01T00:00:00Z",
                        "valueQuantity": {"value": 60 + i % 40, "unit": "/min"},
                    }
                )
                + b"\n"
            )


def _rate(label: str, rows: int, seconds: float) -> None:
    print(f"{label:<34} {rows:>9} rows {seconds:7.2f}s {rows / seconds:>10,.0f} rows/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--postgres-url")
    ap.add_argument("--skip-postgres", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wh-bench-"))
    files = [tmp / "v1.ndjson", tmp / "v2.ndjson"]
    for n, f in enumerate(files, start=1):
        _write_ndjson(f, args.rows, n)

    start = time.perf_counter()
    with files[0].open("rb") as fh:
        for line in fh:
            orjson.loads(line)
    _rate("baseline: orjson parse only", args.rows, time.perf_counter() - start)

    zone = LandingZone(tmp / "landing")
    landed = []
    for n, f in enumerate(files, start=1):
        start = time.perf_counter()
        landed.append(
            land_ndjson_file(zone, f, connection_id="c1", resource_type="Observation", run_id=f"r{n}", source=str(f))
        )
        _rate(f"landing v{n} (NDJSON -> Parquet)", args.rows, time.perf_counter() - start)

    targets = [("duckdb", str(tmp / "bench.duckdb"))]
    with contextlib.ExitStack() as stack:
        if not args.skip_postgres:
            from tests.pgserver import given_or_throwaway_database

            targets.append(("postgres", stack.enter_context(given_or_throwaway_database(args.postgres_url, "bench"))))
        for name, target in targets:
            with open_warehouse(target) as wh:
                for label, lf in (("insert", landed[0]), ("replay", landed[0]), ("update", landed[1])):
                    start = time.perf_counter()
                    stats = wh.upsert(lf)
                    _rate(f"{name} upsert {label} {stats.inserted}/{stats.updated}", args.rows,
                          time.perf_counter() - start)  # fmt: skip


if __name__ == "__main__":
    main()
