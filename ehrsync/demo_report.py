"""What ``ehrsync demo`` prints: per-phase totals, a Bulk export's progress, and the analyst's summary table."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BulkProgress", "SyncTotals", "fingerprint", "say", "summary"]


def say(message: str = "") -> None:
    """The demo's output is its user interface: plain lines on stdout, flushed as each step ends."""
    print(message, flush=True)


@dataclass
class SyncTotals:
    """Per connection and phase, what each resource type fetched and how the warehouse changed."""

    fetched: Counter[str] = field(default_factory=Counter)
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    runs: int = 0

    def add(self, materializations: Mapping[str, Mapping[str, Any]]) -> None:
        self.runs += 1
        for asset, meta in materializations.items():
            rtype = asset.rsplit("/", 1)[-1]
            if asset.startswith("landing/"):
                self.fetched[rtype] += int(meta.get("fetched", 0) or 0)
            elif asset.startswith("warehouse/"):
                self.created[rtype] += int(meta.get("created", 0) or 0)
                self.updated[rtype] += int(meta.get("updated", 0) or 0)


def fingerprint(warehouse_url: str) -> str:
    from warehouse import open_warehouse

    with open_warehouse(warehouse_url, read_only=True) as wh:
        return wh.row_fingerprint()


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    say(line.format(*header))
    say(line.format(*["-" * w for w in widths]))
    for row in rows:
        say(line.format(*row))


class BulkProgress:
    """Prints a Bulk export's progress while it runs, read from the persisted job state (BDX-08) every half second:
    the same rows a restarted run resumes from, so what is shown is what is durable."""

    def __init__(self, database_url: str, connection_id: str) -> None:
        self._database_url = database_url
        self._connection_id = connection_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bulk-progress", daemon=True)

    def __enter__(self) -> BulkProgress:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        from sqlalchemy import func, select

        from engine.models import BulkJob, BulkJobFile
        from store import AppDatabase

        db = AppDatabase.from_url(self._database_url)
        last = ""
        try:
            while not self._stop.wait(0.5):
                with db.session() as session:
                    job = session.scalars(
                        select(BulkJob)
                        .where(BulkJob.connection_id == self._connection_id)
                        .order_by(BulkJob.requested_at.desc())
                        .limit(1)
                    ).first()
                    if job is None:
                        continue
                    states = dict(
                        session.execute(
                            select(BulkJobFile.state, func.count())
                            .where(BulkJobFile.job_id == job.id)
                            .group_by(BulkJobFile.state)
                        ).all()
                    )
                total = sum(states.values())
                line = f"   export {job.status}" + (f": {states.get('done', 0)}/{total} files landed" if total else "")
                if line != last:
                    say(line)
                    last = line
        finally:
            db.dispose()


def summary(warehouse_url: str, full: SyncTotals, incremental: SyncTotals) -> None:
    from warehouse import open_warehouse

    with open_warehouse(warehouse_url, read_only=True) as wh:
        per_type: dict[str, list[int]] = {}
        for row in wh.summary():
            counts = per_type.setdefault(str(row["resource_type"]), [0, 0])
            counts[0] += int(row["live"])
            counts[1] += int(row["deleted"])
    rows = [
        [rtype, str(full.fetched.get(rtype, 0)), str(incremental.fetched.get(rtype, 0)), str(live), str(dead)]
        for rtype, (live, dead) in sorted(per_type.items())
    ]
    _table(rows, ["resource type", "full sync", "incremental", "live rows", "tombstones"])
