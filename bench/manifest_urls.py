"""Micro-benchmark of validating a legal Bulk manifest of many files with long signed URLs (``parse_manifest``).

Each file ``url`` is resolved against the manifest page (a reference) and checked: not empty, no control characters,
not the page itself, an http(s) URL with a host httpx can send to. Real servers sign each file's URL (S3, Azure, GCS:
~1-2 KB of query), and 20,000 files is the default limit (EHRSYNC_BULK_MAX_FILES): such a manifest took seconds
when each URL was scanned a character at a time. Times the decode of the page (``orjson.loads``, the baseline) and
``parse_manifest`` of absolute URLs and of references, least CPU of ``--repeat`` runs.

Run: ``.venv/bin/python -m bench.manifest_urls [--files 20000] [--url-bytes 2000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from bench.timing import least_cpu_s
from connectors.bulk.manifest import parse_manifest

PAGE = "https://ehr.example.org/fhir/bulk/status/job1"


def manifest(files: int, url_bytes: int, *, relative: bool) -> dict[str, Any]:
    """A manifest of ``files`` Observation files whose URLs (absolute, or references) are ~``url_bytes`` long."""
    head = "https://files.example.org" if not relative else ""
    query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-Signature="
    pad = max(0, url_bytes - len(head) - len(query) - 40)
    signature = ("0123456789abcdef" * (pad // 16 + 1))[:pad]
    output = [
        {"type": "Observation", "url": f"{head}/files/Observation-{n}.ndjson?{query}{signature}", "count": 1000}
        for n in range(files)
    ]
    return {
        "transactionTime": "2026-12-07T00:00:00Z",
        "request": "https://ehr.example.org/fhir/$export",
        "requiresAccessToken": False,
        "output": output,
        "error": [],
    }


def measure(files: int, url_bytes: int, repeat: int) -> dict[str, float]:
    """Least CPU seconds of each step, and the page's size in MB."""
    absolute, relative = manifest(files, url_bytes, relative=False), manifest(files, url_bytes, relative=True)
    raw = orjson.dumps(absolute)
    return {
        "mb": len(raw) / 1e6,
        "loads_s": least_cpu_s(lambda: orjson.loads(raw), repeat),
        "absolute_s": least_cpu_s(lambda: parse_manifest(absolute, base_url=PAGE), repeat),
        "relative_s": least_cpu_s(lambda: parse_manifest(relative, base_url=PAGE), repeat),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.manifest_urls", description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20_000, help="files listed (default: EHRSYNC_BULK_MAX_FILES)")
    ap.add_argument("--url-bytes", type=int, default=2000, help="length of each file URL")
    ap.add_argument("--repeat", type=int, default=3, help="runs per step; the least CPU time is reported")
    args = ap.parse_args(argv)
    r = measure(args.files, args.url_bytes, args.repeat)
    sys.stdout.write(
        f"{args.files:,} files, ~{args.url_bytes} B URLs, {r['mb']:.0f} MB page, least CPU of {args.repeat}\n"
    )
    for name, key in [
        ("orjson.loads of the page (baseline)", "loads_s"),
        ("parse_manifest, absolute URLs", "absolute_s"),
        ("parse_manifest, references resolved", "relative_s"),
    ]:
        sys.stdout.write(f"  {name:<40} {r[key]:6.2f} s\n")


if __name__ == "__main__":
    main()
