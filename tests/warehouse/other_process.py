"""Another process at the warehouse file: what must work as soon as this process lets go of it."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from typing import Any

import duckdb


def _write_at_once(path: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    """Another process opening the file read-write directly (DuckDB's own lock, no wait)."""
    try:
        conn = duckdb.connect(path)
        conn.execute("CREATE TABLE IF NOT EXISTS other_process (a INTEGER)")
        row = conn.execute("SELECT count(*) FROM fhir_resources").fetchone()
        conn.close()
        queue.put(f"wrote, saw {row[0] if row else None}")
    except duckdb.Error as exc:
        queue.put(f"refused: {exc}")


def other_process_writes(path: object) -> str:
    """``wrote, saw <rows of fhir_resources>``, or why DuckDB refused (a spawned process: a fresh interpreter)."""
    return str(in_child("spawn", _write_at_once, str(path)))


def in_child(method: str, target: Callable[..., None], *args: Any) -> Any:
    """What ``target(*args, queue)`` put on the queue in a child process started by ``method``; it must exit 0."""
    ctx = mp.get_context(method)
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))  # type: ignore[attr-defined]
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0, proc.exitcode
    return queue.get(timeout=5)
