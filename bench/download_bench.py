"""Micro-benchmark of one Bulk file download to disk (``connectors/fhir/download.stream_to_file``).

A local HTTP server (a thread of this process, over a real socket) serves generated NDJSON plain and gzip-encoded;
the downloading thread's CPU time is measured (``time.thread_time``, so the server's own work is not counted) for:
the baseline (httpx ``iter_raw`` straight to the file, through one unbounded ``zlib`` inflate for the gzip body:
the least any client does), ehrsync's ``stream_to_file``,
and httpx's own decoding in 1 MiB chunks (``iter_bytes(1 MiB)``, what ehrsync used before
``connectors/transport/decoding.py``); then ``stream_to_file`` again through a ``BoundedClient`` (production's
client, whose transport keeps the request deadline down to each socket read, ``connectors/transport/network.py``)
next to the same through a plain ``httpx.Client``, and ``BulkClient.download`` through it: the whole production path
of a Bulk file (retry and attempt layers, the request deadline up to the headers, the low-speed limit and the
wire cap on the body, ``connectors/bulk/files.py``). A last row downloads a body that compresses ~1000:1 (one
resource repeated) under ``tracemalloc`` and reports the most Python held at once by each decoder.

Run: ``.venv/bin/python -m bench.download_bench [--mb 200] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson

from connectors.bulk import BulkClient
from connectors.fhir.download import stream_to_file
from connectors.transport import BoundedClient

_CHUNK = 1024 * 1024


def ndjson(mb: int) -> bytes:
    """About ``mb`` MB of distinct Observation lines (deterministic)."""
    lines = []
    size, i = 0, 0
    while size < mb * 1_000_000:
        line = orjson.dumps(
            {"resourceType": "Observation", "id": f"o{i}", "status": "final", "valueQuantity": {"value": i % 997}}
        )
        lines.append(line + b"\n")
        size += len(line) + 1
        i += 1
    return b"".join(lines)


@contextmanager
def serving(bodies: dict[str, tuple[bytes, str | None]]) -> Iterator[str]:
    """``/name`` answers ``bodies[name]`` (body, Content-Encoding) in 64 KiB writes; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body, coding = bodies[self.path.lstrip("/")]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            if coding:
                self.send_header("Content-Encoding", coding)
            self.end_headers()
            view = memoryview(body)
            for start in range(0, len(body), 65536):
                self.wfile.write(view[start : start + 65536])

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _raw(response: httpx.Response, dest: Path) -> None:
    inflate = zlib.decompressobj(zlib.MAX_WBITS | 16) if response.headers.get("Content-Encoding") else None
    with dest.open("wb") as out:
        for chunk in response.iter_raw():
            out.write(inflate.decompress(chunk) if inflate is not None else chunk)


def _httpx_chunks(response: httpx.Response, dest: Path) -> None:
    with dest.open("wb") as out:
        for chunk in response.iter_bytes(_CHUNK):
            out.write(chunk)


def _ehrsync(response: httpx.Response, dest: Path) -> None:
    stream_to_file(response, dest, None, scratch=True)


BOUNDED = "ehrsync stream_to_file, BoundedClient"
BULK = "ehrsync BulkClient.download, BoundedClient"
VARIANTS: dict[str, Callable[[httpx.Response, Path], None]] = {
    "iter_raw (+ zlib) to the file (baseline)": _raw,
    "ehrsync stream_to_file": _ehrsync,
    "httpx iter_bytes(1 MiB) to the file (before)": _httpx_chunks,
}


def _timed(client: httpx.Client, url: str, dest: Path, variant: Callable[[httpx.Response, Path], None]) -> float:
    start = time.thread_time()
    with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as response:
        variant(response, dest)
    return time.thread_time() - start


def _timed_bulk(bulk: BulkClient, url: str, dest: Path) -> float:
    start = time.thread_time()
    bulk.download(url, dest, requires_token=False, max_bytes=10 * 1024**3)  # production's default file limit
    return time.thread_time() - start


def _peak(client: httpx.Client, url: str, dest: Path, variant: Callable[[httpx.Response, Path], None]) -> int:
    tracemalloc.start()
    try:
        with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as response:
            variant(response, dest)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(mb: int, repeat: int) -> dict[str, float]:
    """Least thread CPU seconds per (variant, body) over ``repeat`` runs, plus peak bytes on the repetitive body."""
    data = ndjson(mb)
    line = orjson.dumps({"resourceType": "Patient", "id": "same"}) + b"\n"
    repetitive = gzip.compress(line * (64 * 1024 * 1024 // len(line)), compresslevel=9)
    bodies = {
        "plain": (data, None),
        "gzip": (gzip.compress(data, compresslevel=1), "gzip"),
        "rep": (repetitive, "gzip"),
    }
    results: dict[str, float] = {"mb": len(data) / 1e6}
    with (
        tempfile.TemporaryDirectory() as tmp,
        serving(bodies) as base,
        httpx.Client(timeout=60) as client,
        BoundedClient(bounds=None, timeout=60) as bounded,
    ):
        bulk = BulkClient(f"{base}/fhir", None, http=bounded, allow_http=True)
        dest = Path(tmp) / "file.ndjson"
        for _ in range(repeat):
            for name, variant in VARIANTS.items():
                for body in ("plain", "gzip"):
                    key = f"{body}|{name}"
                    results[key] = min(results.get(key, float("inf")), _timed(client, f"{base}/{body}", dest, variant))
            for body in ("plain", "gzip"):  # production's client, right after the plain client's run of the same
                key = f"{body}|{BOUNDED}"
                results[key] = min(results.get(key, float("inf")), _timed(bounded, f"{base}/{body}", dest, _ehrsync))
                key = f"{body}|{BULK}"
                results[key] = min(results.get(key, float("inf")), _timed_bulk(bulk, f"{base}/{body}", dest))
        for name, variant in VARIANTS.items():
            if variant is not _raw:  # the baseline inflates each received chunk whole, as httpx does
                results[f"peak|{name}"] = _peak(client, f"{base}/rep", dest, variant)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.download_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200, help="size of the generated NDJSON file")
    ap.add_argument("--repeat", type=int, default=3, help="runs per variant; the least CPU time is reported")
    args = ap.parse_args(argv)
    r = measure(args.mb, args.repeat)
    sys.stdout.write(f"{r['mb']:.0f} MB of NDJSON, least download-thread CPU of {args.repeat} runs\n")
    for body in ("plain", "gzip"):
        for name in (*VARIANTS, BOUNDED, BULK):
            seconds = r[f"{body}|{name}"]
            sys.stdout.write(f"  {body:<5} {name:<46} {seconds:6.2f} s  {r['mb'] / max(seconds, 1e-9):7.0f} MB/s\n")
    sys.stdout.write("64 MiB that compress ~1000:1 (gzip): most Python memory held at once\n")
    for name in VARIANTS:
        if f"peak|{name}" in r:
            sys.stdout.write(f"  {name:<52} {r[f'peak|{name}'] / 2**20:7.1f} MiB\n")


if __name__ == "__main__":
    main()
