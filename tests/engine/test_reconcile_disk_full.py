"""A full landing disk met while confirming a type's deletions (BDX-31): the reconcile run fails naming the problem
and the file, stops at that type (every later type would meet the same disk), deletes nothing it should not, and
the next reconcile, once there is room, finishes the work.

The full disk is simulated at the one call that writes a landing file's bytes (``ParquetWriter.write_table``, which
on a real full disk raises ``OSError`` errno ENOSPC with no file name: checked against ``/dev/full``). Before, the
failure was recorded as ``LandingError: could not write landing file <name>: [Errno 28] ...`` (or a bare
``OSError`` when a batch filled up mid-type) on each type in turn: the run went on into every later type and its
read-back, each meeting the same disk."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance

from engine.reconcile_run import reconcile_types
from sandbox import SandboxConfig, SandboxServer
from tests.engine.helpers import SyncWorld
from tests.engine.job_runs import run_reconcile
from tests.engine.test_reconcile_stops import _AFTER, _TYPE, _TYPES, _synced_then_deleted, deleted_of

_FULL = "landing_disk_full"


def _live_ids(world: SyncWorld, cid: str) -> dict[str, set[str]]:
    con = duckdb.connect(world.env.warehouse_target, read_only=True)
    try:
        rows = con.execute(
            "SELECT resource_type, id FROM fhir_resources WHERE connection_id = ? AND deleted_at IS NULL", [cid]
        ).fetchall()
    finally:
        con.close()
    live: dict[str, set[str]] = {}
    for rtype, rid in rows:
        live.setdefault(str(rtype), set()).add(str(rid))
    return live


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_: Any, **__: Any) -> Any:
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)


def test_a_full_disk_while_confirming_stops_the_run_naming_it_and_deletes_nothing_wrongly_bdx31(
    http: httpx.Client, world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing = Path(world.env.zone.root)
    with SandboxServer(SandboxConfig(patients=1, seed=5)) as sb:
        cid, deleted = _synced_then_deleted(world, sb, http)
        before = _live_ids(world, cid)
        with monkeypatch.context() as patch:
            _disk_full(patch)
            reports = {r.resource_type: r for r in reconcile_types(world.env, cid, _TYPES, run_id="reconcile-full")}
        after = _live_ids(world, cid)
        met = reports[_TYPE]
        assert met.stopped is not None and met.stopped.code == _FULL, met
        said = met.confirm_error or ""
        assert said.startswith(f"{_FULL}: the disk is full") and str(landing / cid / _TYPE) in said, said
        assert met.recovered is None, met  # the read-back is not sent into the same disk
        for rtype in _AFTER:
            assert reports[rtype].error == f"not reached: the run stopped at {_TYPE} ({_FULL})", reports[rtype]
            assert after.get(rtype) == before[rtype], rtype
        # only what the EHR confirmed gone is tombstoned: each of them deleted on the EHR
        tombstoned = before[_TYPE] - after[_TYPE]
        assert len(tombstoned) == met.tombstoned and tombstoned <= deleted_of(deleted, _TYPE), (met, deleted)
        assert not [p.name for p in landing.rglob(".*.tmp")], "a partial landing file was left behind"

        with DagsterInstance.ephemeral() as instance:  # the weekly job fails loudly, naming the disk and the file
            with monkeypatch.context() as patch:
                _disk_full(patch)
                failed = run_reconcile(world, cid, instance)
            assert not failed.success
            (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
            description = str(failure.step_failure_data.user_failure_data.description)
            assert "the disk is full" in description and str(landing / cid) in description, description

            again = run_reconcile(world, cid, instance)  # room again: the next reconcile finishes the work
            assert again.success, [e.message for e in again.all_events if e.event_type_value == "STEP_FAILURE"]
    final = _live_ids(world, cid)
    for rtype in _TYPES:
        assert before[rtype] - final.get(rtype, set()) == deleted_of(deleted, rtype), rtype
    assert len(final[_TYPE] - before[_TYPE]) == 1  # the Observation the warehouse lost is read back
