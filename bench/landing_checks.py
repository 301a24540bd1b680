"""Micro-benchmark of Bulk landing's block checks (``warehouse/_vector_checks.py``) on long lines.

The sandbox's resources are short (1 block in 420 of a 10,000-patient export holds a line of 2,000 bytes or more),
so ``make bench`` cannot show what the checks cost on a real server's documents and notes. This generates
Observations carrying a note of 300-900 words (~4.6 KB a line), splits them into blocks as landing does, and
times ``check_block`` at this interpreter's recursion limit and with the limit raised (a process where msgspec
would take deeper nesting than orjson, so long lines get their brackets counted), next to ``orjson.loads`` of
every line (the per-line path's parse) in the same run.

Run: ``.venv/bin/python -m bench.landing_checks [--lines 40000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import io
import random
import sys

import orjson

from bench.timing import least_cpu_s
from warehouse._blocks import Block, read_blocks
from warehouse._vector_checks import check_block

_WORDS = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
]
_MAX_LINE = 1 << 26
RAISED_LIMIT = 5000  # a limit at which msgspec takes nesting orjson refuses, so long lines get their brackets counted


def long_lines(count: int, seed: int = 1) -> bytes:
    """``count`` NDJSON Observations of a few KB each (deterministic)."""
    rng = random.Random(seed)
    out = io.BytesIO()
    for i in range(count):
        resource = {
            "resourceType": "Observation",
            "id": f"obs-{i}",
            "meta": {"versionId": "1", "lastUpdated": "2026-11-02T03:04:05.678Z"},
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "valueQuantity": {"value": 60 + i % 40, "unit": "/min"},
            "note": [{"text": " ".join(rng.choices(_WORDS, k=rng.randint(300, 900)))}],
        }
        out.write(orjson.dumps(resource) + b"\n")
    return out.getvalue()


def measure(lines: int, repeat: int) -> dict[str, float]:
    """CPU seconds of each variant over the same blocks, and the data's size in MB."""
    data = long_lines(lines)
    blocks = [b.lines for b in read_blocks(io.BytesIO(data), _MAX_LINE) if isinstance(b, Block)]
    raw = [line for line in data.split(b"\n") if line]

    def checks() -> None:
        for block in blocks:
            check_block(block, "Observation", _MAX_LINE)

    results = {"mb": len(data) / 1e6, "orjson_loads_s": least_cpu_s(lambda: [orjson.loads(r) for r in raw], repeat)}
    results["checks_s"] = least_cpu_s(checks, repeat)
    limit = sys.getrecursionlimit()
    raised = max(limit, RAISED_LIMIT)
    results["raised_limit"] = raised
    sys.setrecursionlimit(raised)
    try:
        results["checks_raised_limit_s"] = least_cpu_s(checks, repeat)
    finally:
        sys.setrecursionlimit(limit)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.landing_checks", description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=40_000, help="long lines generated (~4.6 KB each)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per variant; the least CPU time is reported")
    args = ap.parse_args(argv)
    r = measure(args.lines, args.repeat)
    rows = [
        ("orjson.loads of every line (baseline)", r["orjson_loads_s"]),
        (f"check_block, recursion limit {sys.getrecursionlimit()}", r["checks_s"]),
        (f"check_block, recursion limit {r['raised_limit']:.0f} (brackets counted)", r["checks_raised_limit_s"]),
    ]
    sys.stdout.write(f"{args.lines:,} lines, {r['mb']:.0f} MB, least CPU of {args.repeat} runs\n")
    for name, seconds in rows:
        sys.stdout.write(f"  {name:<55} {seconds:6.2f} s  {r['mb'] / seconds:7.0f} MB/s\n")


if __name__ == "__main__":
    main()
