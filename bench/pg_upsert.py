"""PostgreSQL upsert against a raw ``COPY`` of the same rows into a table of the same shape (issue 14's target:
upsert >= 0.8x raw COPY, 1M stored rows, 20% updated).

Data: sandbox Observations (``sandbox.data.generator``, seed 7) as templates, each repeated under new ids
(``<id>-<k>``) to ``--pg-rows`` resources, written as landed Parquet (the landing schema, 5,000-row groups, zstd).
1. Stored: ``fhir_resources`` is loaded with those ``rows`` resources through ``Warehouse.upsert`` (all new).
2. Batch: ``rows`` resources again: 20% updated (a newer ``lastUpdated``, versionId 2 and a changed status),
   70% unchanged (identical replays) and 10% new ids; it is upserted and timed.
3. Baseline: the same batch rows ``COPY``-ed (resource as JSONB, content hash included) into an empty table
   created ``LIKE fhir_resources INCLUDING ALL`` (same columns and primary key), with no conflict handling. Its
   COPY text is written to a file before timing, so the baseline times the server alone (the upsert's own
   time includes reading the Parquet, hashing and encoding on the client).

Run alone: ``.venv/bin/python bench/pg_upsert.py --pg-rows 100000`` (a throwaway PostgreSQL from tests/pgserver.py;
``--postgres-url`` uses an existing one). Runs as a script too so an older checkout can be measured with
``PYTHONPATH=<checkout>`` for an A/B (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if __package__ in (None, ""):  # run as a script (A/B against another checkout via PYTHONPATH)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from sandbox.data.generator import Generator
from warehouse import LandedFile, open_warehouse
from warehouse.landed import LANDING_SCHEMA
from warehouse.postgres_backend import psycopg_conninfo

UPDATED, UNCHANGED, NEW = 0.2, 0.7, 0.1
TARGET_RATIO = 0.8
_GROUP_ROWS = 5_000
_T1 = datetime(2026, 1, 1, tzinfo=UTC)
_T2 = datetime(2026, 2, 1, tzinfo=UTC)


def _templates(count: int = 20_000) -> list[dict[str, Any]]:
    gen, patient = Generator(7, 10_000), 0
    out: list[dict[str, Any]] = []
    while len(out) < count:
        out += gen.patient_resources(patient, ("Observation",))
        patient += 1
    return out[:count]


def _resource(templates: list[dict[str, Any]], n: int, version: int) -> dict[str, Any]:
    t = templates[n % len(templates)]
    when = (_T2 if version == 2 else _T1).isoformat().replace("+00:00", "Z")
    res = {**t, "id": f"{t['id']}-{n // len(templates)}", "meta": {"versionId": str(version), "lastUpdated": when}}
    if version == 2:
        res["status"] = "amended"
    return res


def write_landed(path: Path, rows: Iterator[tuple[int, int]], templates: list[dict[str, Any]], count: int) -> None:
    """A landed Parquet file of ``count`` resources (number, version) as the landing writer lays it out."""
    with pq.ParquetWriter(path, LANDING_SCHEMA, compression="zstd") as writer:
        while True:
            group = [next(rows) for _ in range(min(_GROUP_ROWS, count))]
            count -= len(group)
            if not group:
                break
            docs = [_resource(templates, n, v) for n, v in group]
            writer.write_table(
                pa.table(
                    {
                        "tenant_id": ["t1"] * len(docs),
                        "connection_id": ["c1"] * len(docs),
                        "resource_type": ["Observation"] * len(docs),
                        "id": [d["id"] for d in docs],
                        "last_updated": [_T2 if v == 2 else _T1 for _, v in group],
                        "version_id": [str(v) for _, v in group],
                        "source": ["https://ehr.example/bulk/Observation.ndjson"] * len(docs),
                        "transaction_time": [_T2] * len(docs),
                        "run_id": ["bench"] * len(docs),
                        "resource_json": [orjson.dumps(d).decode() for d in docs],
                    },
                    schema=LANDING_SCHEMA,
                )
            )


def _batch_rows(rows: int) -> Iterator[tuple[int, int]]:
    """Updated ids first (20%), then unchanged (70%), then new ids (10%), interleaved in blocks of 10."""
    for n in range(rows):
        k = n % 10
        if k < 2:
            yield n, 2
        elif k < 9:
            yield n, 1
        else:
            yield rows + n, 1  # never stored


def landed(path: Path, rows: int) -> LandedFile:
    return LandedFile(path, rows, path.stat().st_size, 0, None, None, "Observation", "c1", "bench", None, "t1")


def raw_copy(dsn: str, path: Path, workdir: Path) -> float:
    """Seconds to COPY the batch into an empty table of fhir_resources' shape (no conflict handling). The COPY
    text is prepared before the clock starts, so the baseline is the server's own cost, as from a file."""
    cols = [*LANDING_SCHEMA.names[:-1], "content_hash", "resource", "landed_at"]
    prepared = workdir / "batch.copy"
    with prepared.open("wb") as fh:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=2_048):
            fh.write(_raw_payload(batch))
    with psycopg.connect(psycopg_conninfo(dsn), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS fhir_resources_raw")
        conn.execute("CREATE TABLE fhir_resources_raw (LIKE fhir_resources INCLUDING ALL)")
        started = time.perf_counter()
        sql = f"COPY fhir_resources_raw ({', '.join(cols)}) FROM STDIN"
        with prepared.open("rb") as fh, conn.cursor() as cur, cur.copy(sql) as copy:
            while block := fh.read(1 << 20):
                copy.write(block)
        seconds = time.perf_counter() - started
    prepared.unlink()
    return seconds


def _raw_payload(batch: pa.RecordBatch) -> bytes:
    """COPY text of the batch (self-contained, so an older checkout is measured against the same baseline)."""
    now = datetime.now(UTC).isoformat()
    texts = [batch.column(n) for n in LANDING_SCHEMA.names[:-1]]
    texts.append(pa.array([hashlib.sha256(s.encode()).hexdigest() for s in batch.column("resource_json").to_pylist()]))
    texts.append(batch.column("resource_json"))
    fields = []
    for col in texts:
        if pa.types.is_timestamp(col.type):
            text = pc.strftime(col, format="%Y-%m-%d %H:%M:%S+00")
        else:
            text = col
            for old, new in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
                text = pc.replace_substring(text, old, new)
        fields.append(text.fill_null("\\N"))
    fields.append(pa.array([now] * batch.num_rows))
    lines = pc.binary_join_element_wise(*fields, "\t")
    return "\n".join(lines.to_pylist()).encode() + b"\n"


def _checksum(dsn: str) -> str:
    with psycopg.connect(psycopg_conninfo(dsn)) as conn:
        row = conn.execute(
            "SELECT count(*), string_agg(md5(id || content_hash), '' ORDER BY id) FROM fhir_resources"
        ).fetchone()
    assert row is not None
    return f"{row[0]}:{hashlib.sha256(str(row[1]).encode()).hexdigest()[:16]}"


def run_pg_upsert_bench(workdir: Path, *, rows: int, postgres_url: str | None = None) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    templates = _templates(min(20_000, rows))
    stored, batch = workdir / "stored.parquet", workdir / "batch.parquet"
    write_landed(stored, ((n, 1) for n in range(rows)), templates, rows)
    write_landed(batch, _batch_rows(rows), templates, rows)
    out: dict[str, Any] = {"rows": rows, "mix": {"updated": UPDATED, "unchanged": UNCHANGED, "new": NEW}}
    from tests.pgserver import given_or_throwaway_database

    with given_or_throwaway_database(postgres_url, "bench_pg_upsert") as url, open_warehouse(url) as wh:
        started = time.perf_counter()
        first = wh.upsert(landed(stored, rows))
        out["initial_load"] = _rate(rows, time.perf_counter() - started, first)
        started = time.perf_counter()
        phases = dict(getattr(wh, "phase_seconds", {}))
        stats = wh.upsert(landed(batch, rows))
        out["upsert"] = _rate(rows, time.perf_counter() - started, stats)
        after = getattr(wh, "phase_seconds", {})
        out["upsert"]["phases_s"] = {k: round(v - phases.get(k, 0.0), 2) for k, v in after.items()}
        out["stored_after"] = _checksum(url)
        out["raw_copy"] = _rate(rows, raw_copy(url, batch, workdir), None)
    out["ratio"] = round(out["upsert"]["rows_per_s"] / out["raw_copy"]["rows_per_s"], 3)
    out["target_met"] = out["ratio"] >= TARGET_RATIO
    return out


def _rate(rows: int, seconds: float, stats: Any) -> dict[str, Any]:
    counts = (
        {} if stats is None else {"created": stats.inserted, "updated": stats.updated, "unchanged": stats.unchanged}
    )
    return {"seconds": round(seconds, 2), "rows_per_s": round(rows / seconds), **counts}


def table(result: dict[str, Any]) -> str:
    """The human summary of one run (``python -m bench`` prints it after the other tables)."""
    up, raw = result["upsert"], result["raw_copy"]
    verdict = "met" if result["ratio"] >= TARGET_RATIO else "MISSED"
    return "\n".join(
        [
            f"pg upsert: {result['rows']:,} stored rows, batch {up['created']:,} new / {up['updated']:,} updated / "
            f"{up['unchanged']:,} unchanged",
            f"pg upsert (ehrsync)    {up['seconds']:8.2f} s {up['rows_per_s']:>10,} rows/s {up.get('phases_s')}",
            f"pg raw COPY (baseline) {raw['seconds']:8.2f} s {raw['rows_per_s']:>10,} rows/s",
            f"pg upsert / raw COPY   {result['ratio']:.2f}x (target >= {TARGET_RATIO}x: {verdict})",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--pg-rows", type=int, default=1_000_000, help="stored rows and batch rows")
    ap.add_argument("--postgres-url", help="an existing PostgreSQL database (default: a throwaway server)")
    ap.add_argument("--workdir", type=Path, default=Path("var/bench/pg-upsert"))
    args = ap.parse_args(argv)
    if args.pg_rows < 10:
        ap.error("--pg-rows must be at least 10")
    result = run_pg_upsert_bench(args.workdir, rows=args.pg_rows, postgres_url=args.postgres_url)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
