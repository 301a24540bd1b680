"""``python -m bench.scheduler_tick``: time one evaluation of the ``scheduled_syncs`` sensor (it ticks every 60 s).

A SQLite app database holds N connections (daily syncs, most synced within the day) and 30 days of run history
each (a run a day, 5% of connections with recent failures); a SQLite Dagster instance holds the N partitions and
a backlog of queued and started runs (of N/10 random connections). Prints the median of a few
evaluations per size.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import DagsterRunStatus, build_sensor_context
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_run_for_test, instance_for_test
from sqlalchemy import insert, text

from engine.models import SyncRun
from engine.run_tags import CONNECTION_TAG
from pipelines.defs._shared.partitions import PATIENT_CONNECTIONS_PARTITIONS_NAME
from pipelines.defs.scheduling.sensors import scheduled_syncs_sensor
from pipelines.resources import AppDatabaseResource, RetryPolicyResource, SyncPolicyResource
from store import AppDatabase
from store.models import Connection, Tenant

HISTORY_DAYS = 30


def _app_db(root: Path, n: int, now: datetime, rng: random.Random, *, steady: bool) -> tuple[str, list[str]]:
    url = f"sqlite:///{root / 'app.db'}"
    db = AppDatabase.from_url(url)
    db.migrate()
    ids = [f"c{i:06d}" for i in range(n)]
    conns, runs = [], []
    for i, cid in enumerate(ids):
        # burst: about 8% of the daily connections overdue at once; steady: 5 overdue, the rest synced < 22 h ago
        overdue = i < 5 if steady else True
        last = now - timedelta(hours=rng.uniform(0, 26) if overdue else rng.uniform(0, 22))
        conns.append(
            {
                "id": cid,
                "tenant_id": "t1",
                "provider_id": "epic",
                "kind": "patient",
                "fhir_base": "http://127.0.0.1:9/fhir",
                "client_id": "client",
                "patient_id": "p1",
                "status": "active",
                "sync_frequency_hours": 24,
                "created_at": now - timedelta(days=HISTORY_DAYS + 1),
                "updated_at": now - timedelta(days=HISTORY_DAYS),
                "last_sync_at": last,
            }
        )
        failing = rng.random() < 0.05
        for day in range(HISTORY_DAYS):
            at = now - timedelta(days=day, hours=rng.uniform(0, 2))
            status = "failed" if failing and day < 2 else "completed"
            runs.append(
                {
                    "id": uuid.uuid4().hex,
                    "connection_id": cid,
                    "kind": "incremental",
                    "status": status,
                    "created_at": at,
                    "started_at": at,
                    "finished_at": at + timedelta(minutes=2),
                    "counts": {},
                    "bytes": 0,
                    "error": "run failed" if status == "failed" else None,
                }
            )
    with db.engine.begin() as conn:
        conn.execute(insert(Tenant), [{"id": "t1", "name": "bench", "settings": {}}])
        conn.execute(insert(Connection), conns)
        for start in range(0, len(runs), 20_000):
            conn.execute(insert(SyncRun), runs[start : start + 20_000])
    db.dispose()
    return url, ids


def measure(n: int, repeats: int, *, without_index: bool = False, steady: bool = False) -> float:
    now = datetime.now(UTC)
    rng = random.Random(n)
    with tempfile.TemporaryDirectory() as tmp, instance_for_test(temp_dir=tmp) as instance:
        url, ids = _app_db(Path(tmp), n, now, rng, steady=steady)
        if without_index:  # as before migration 0004
            db = AppDatabase.from_url(url)
            with db.engine.begin() as conn:
                conn.execute(text("DROP INDEX ix_sync_runs_connection_status_created"))
            db.dispose()
        instance.add_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME, ids)
        origin = RemoteJobOrigin(
            repository_origin=RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("ehrsync"), "__repository__"),
            job_name="incremental_sync",
        )
        for i, cid in enumerate(rng.sample(ids, n // 10)):
            status = DagsterRunStatus.STARTED if i % 3 == 0 else DagsterRunStatus.QUEUED
            create_run_for_test(
                instance,
                job_name="incremental_sync",
                status=status,
                tags={CONNECTION_TAG: cid},
                remote_job_origin=origin,
            )
        resources = {
            "app_db": AppDatabaseResource(url=url),
            "policy": SyncPolicyResource(),
            "retry": RetryPolicyResource(),
        }
        times = []
        for _ in range(repeats):
            context = build_sensor_context(instance=instance, resources=resources)
            began = time.perf_counter()
            scheduled_syncs_sensor(context)
            times.append(time.perf_counter() - began)
        return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--without-index", action="store_true", help="drop migration 0004's sync_runs index first")
    ap.add_argument("--steady", action="store_true", help="5 connections due, not about 8%% of them")
    args = ap.parse_args()
    for n in (int(s) for s in args.sizes.split(",")):
        took = measure(n, args.repeats, without_index=args.without_index, steady=args.steady)
        mode = "steady" if args.steady else "burst"
        print(f"{mode:>6}: {n:>6} connections, {n * HISTORY_DAYS:>7} sync_runs rows: {took * 1000:8.0f} ms")


if __name__ == "__main__":
    main()
