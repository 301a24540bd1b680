"""The raw floor for Bulk export on this machine: no engine, no state, no landing, just the bytes and a load.

Same server, same data, same download parallelism as ehrsync, measured minutes apart in one run, so the ehrsync
rate reads as "x times the floor" whatever the machine's mood.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import duckdb
import httpx
import orjson

_POLL_DEADLINE_S = 3600.0


class BaselineError(RuntimeError):
    """The raw export did not produce files (the server answered something unexpected)."""


def _retry_after_s(value: str | None) -> float:
    """Seconds to wait: Retry-After as delta-seconds or an HTTP-date; 1s when absent or unreadable."""
    if not value:
        return 1.0
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return 1.0


def _manifest(http: httpx.Client, fhir_base: str, headers: dict[str, str]) -> dict[str, Any]:
    kick = http.get(f"{fhir_base}/$export", headers={**headers, "Prefer": "respond-async"})
    if kick.status_code != 202 or "Content-Location" not in kick.headers:
        raise BaselineError(f"$export kick-off answered HTTP {kick.status_code}")
    status_url = urljoin(f"{fhir_base}/", kick.headers["Content-Location"])
    deadline = time.monotonic() + _POLL_DEADLINE_S
    while time.monotonic() < deadline:
        status = http.get(status_url, headers=headers)
        if status.status_code == 200:
            manifest: dict[str, Any] = orjson.loads(status.content)
            manifest["_status_url"] = status_url
            return manifest
        if status.status_code not in (202, 429):
            raise BaselineError(f"bulk status answered HTTP {status.status_code}")
        time.sleep(_retry_after_s(status.headers.get("Retry-After")))
    raise BaselineError(f"export not ready after {_POLL_DEADLINE_S:.0f}s")


def _download(http: httpx.Client, url: str, dest: Path, headers: dict[str, str]) -> int:
    with http.stream("GET", url, headers=headers) as response, dest.open("wb") as fh:
        if response.status_code != 200:
            raise BaselineError(f"bulk file answered HTTP {response.status_code}")
        for chunk in response.iter_bytes(1 << 20):
            fh.write(chunk)
    return dest.stat().st_size


def raw_export(
    http: httpx.Client, fhir_base: str, token: str, out_dir: Path, *, concurrency: int, db_path: Path
) -> dict[str, Any]:
    """Kick off a system export, poll, download every output file, then time orjson and DuckDB over them."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    manifest = _manifest(http, fhir_base, headers)
    generated = time.perf_counter()
    files = [
        (urljoin(f"{fhir_base}/", item["url"]), out_dir / f"{n:04d}.ndjson")
        for n, item in enumerate(manifest["output"])
    ]
    file_headers = {"Authorization": headers["Authorization"]} if manifest.get("requiresAccessToken") else {}
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        sizes = list(pool.map(lambda f: _download(http, f[0], f[1], file_headers), files))
    downloaded = time.perf_counter()
    http.delete(manifest["_status_url"], headers=headers)

    lines = 0
    parse_start = time.perf_counter()
    for _, path in files:
        with path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    orjson.loads(line)
                    lines += 1
    parse_s = time.perf_counter() - parse_start

    db_path.unlink(missing_ok=True)
    con = duckdb.connect(str(db_path))
    try:
        load_start = time.perf_counter()
        con.execute(
            "CREATE TABLE raw AS SELECT json->>'resourceType' AS resource_type, json->>'id' AS id, json AS resource "
            "FROM read_ndjson_objects(?)",
            [[str(p) for _, p in files]],
        )
        loaded = con.execute("SELECT count(*) FROM raw").fetchone()
        load_s = time.perf_counter() - load_start
    finally:
        con.close()
        db_path.unlink(missing_ok=True)
    rows = int(loaded[0]) if loaded else 0
    export_s = downloaded - start
    return {
        "files": len(files),
        "bytes": sum(sizes),
        "lines": lines,
        "server_generation_s": generated - start,
        "download_s": downloaded - generated,
        "export_s": export_s,
        "orjson_parse_s": parse_s,
        "orjson_lines_per_s": lines / parse_s if parse_s else 0.0,
        "duckdb_load_s": load_s,
        "duckdb_rows": rows,
        "duckdb_rows_per_s": rows / load_s if load_s else 0.0,
        "end_to_end_s": export_s + load_s,
        "end_to_end_resources_per_s": rows / (export_s + load_s) if export_s + load_s else 0.0,
    }
