"""Re-executing a failed ``bulk_export`` run from the UI ("Re-execute from failure", "Re-execute all"), through the
real job in-process against the sandbox: the re-execution carries on the export the failed run left (the engine
keeps it per connection, not per run), never kicks off a second one while the saved status URL still answers,
merges what the failed run landed exactly once, and moves ``_since`` only once everything merged (BDX-08/14/19).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from dagster import DagsterInstance
from sqlalchemy import select

from connectors.errors import BulkExportError
from engine import bulk_files, cursors, run_bulk_export, runs
from engine.bulk_merge_group import MergeGroup
from engine.models import BulkJob, BulkJobFile
from engine.retries import source_holds
from pipelines.defs.bulk.assets import BULK_EXPORT_JOB
from sandbox import SandboxServer
from tests.engine import reexecution
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, add_fault, connect_backend, content_fingerprint, make_environment, mutate
from tests.engine.job_runs import world_resources, world_settings
from warehouse import WarehouseError

GROUP = "grp0"
STREAM = cursors.bulk_stream("group", GROUP)
KICKOFF = f"/fhir/Group/{GROUP}/$export"


@dataclass(frozen=True)
class Rig:
    """A world, the module's sandbox, the request log, and an instance whose ``bulk_export`` job runs over the
    world (production's job, the world's resources)."""

    world: SyncWorld
    sb: SandboxServer
    http: httpx.Client
    log: RequestLog
    bulk: DagsterInstance


@pytest.fixture
def rig(world: SyncWorld, shared_sb: SandboxServer, http: httpx.Client, request_log: RequestLog) -> Iterator[Rig]:
    reexecution.bind(world_settings(world), world_resources(world), BULK_EXPORT_JOB)
    with DagsterInstance.ephemeral() as instance:
        yield Rig(world, shared_sb, http, request_log, instance)


def _export(instance: DagsterInstance, cid: str) -> tuple[str, list[str]]:
    instance.add_dynamic_partitions("bulk_connections", [cid])
    return reexecution.launch(instance, {"dagster/partition": cid})


def _jobs(world: SyncWorld, cid: str) -> list[BulkJob]:
    with world.env.db.session() as session:
        rows = session.scalars(select(BulkJob).where(BulkJob.connection_id == cid)).all()
        return sorted(rows, key=lambda j: j.requested_at)


def _file_states(world: SyncWorld, job_id: str) -> dict[int, str]:
    with world.env.db.session() as session:
        return {f.id: f.state for f in session.scalars(select(BulkJobFile).where(BulkJobFile.job_id == job_id))}


def _clean(sb: SandboxServer, root: Any) -> list[Any]:
    """Warehouse content of one undisturbed export of the group (a separate world, same sandbox)."""
    with httpx.Client(timeout=30.0) as http:
        clean = make_environment(root / "clean", http=http)
        conn = connect_backend(clean, sb, http=http, group_id=GROUP)
        assert run_bulk_export(clean.env, conn, "clean").status == "completed"
    return content_fingerprint(clean.env.warehouse_target, with_connection=False)


@pytest.mark.parametrize("from_failure", [True, False], ids=["from-failure", "all"])
def test_reexecution_after_a_status_poll_outage_polls_the_same_job_bdx08(rig: Rig, from_failure: bool) -> None:
    """The run failed polling (a 503 streak): its re-execution polls the saved status URL, no second kick-off."""
    world, sb, http, request_log, bulk = rig.world, rig.sb, rig.http, rig.log, rig.bulk
    cid = connect_backend(world, sb, http=http, group_id=GROUP)
    attempts = world.env.retry.max_attempts if world.env.retry else 5
    add_fault(http, sb, "503", path="/bulk/status", times=attempts, retry_after="")
    first, failed = _export(bulk, cid)
    assert failed and "bulk_status_unavailable" in failed[0]
    (job,) = _jobs(world, cid)
    assert job.status == "polling" and cursors.get_mark(world.env.db, cid, STREAM, "*") is None

    again, failed = reexecution.reexecute(bulk, first, from_failure=from_failure)
    assert not failed
    assert len(request_log.paths(KICKOFF, method="POST")) + len(request_log.paths(KICKOFF)) == 1, "one export"
    (job,) = _jobs(world, cid)
    assert job.status == "completed" and job.run_id == first
    assert cursors.get_mark(world.env.db, cid, STREAM, "*") == job.transaction_time
    row = runs.get(world.env.db, again)
    assert row is not None and row.status == "completed" and row.counts["_bulk"]["resumed"]


def test_reexecution_merges_what_the_failed_run_landed_exactly_once_bdx24(
    tmp_path: Any, rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warehouse failed while the run merged its landed files: the re-execution merges each landed file once
    without downloading it again, fetches only what was not landed, and only then moves ``_since``."""
    world, sb, http, request_log, bulk = rig.world, rig.sb, rig.http, rig.log, rig.bulk
    cid = connect_backend(world, sb, http=http, group_id=GROUP)
    real_add, merged, broken = MergeGroup.add, [], [True]

    def add(group: MergeGroup, f: Any, landed: Any) -> None:
        merged.append(f.id)
        if len(merged) == 3 and broken:  # two files merged into the open transaction, the third's merge fails
            broken.clear()
            raise WarehouseError("the warehouse is locked by another process")
        real_add(group, f, landed)

    monkeypatch.setattr(MergeGroup, "add", add)
    first, failed = _export(bulk, cid)
    assert failed and "locked" in failed[0]
    (job,) = _jobs(world, cid)
    states = _file_states(world, job.id)
    landed = {fid for fid, state in states.items() if state == "landed"}
    assert len(landed) >= 3 and "done" not in states.values(), states  # rolled back: nothing merged for good
    assert cursors.get_mark(world.env.db, cid, STREAM, "*") is None

    fetched_before, merged[:] = len(request_log.paths("/bulk/files")), []
    again, failed = reexecution.reexecute(bulk, first, from_failure=True)
    assert not failed
    assert sorted(merged) == sorted(states), "every file merged exactly once by the re-execution"
    refetched = len(request_log.paths("/bulk/files")) - fetched_before
    assert refetched == len(states) - len(landed), "a landed file is merged from its landing, not downloaded again"
    assert not request_log.paths(KICKOFF, method="POST")[1:] and len(request_log.paths(KICKOFF)) <= 1
    assert set(_file_states(world, job.id).values()) == {"done"}
    assert cursors.get_mark(world.env.db, cid, STREAM, "*") == _jobs(world, cid)[0].transaction_time
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == _clean(sb, tmp_path)
    row = runs.get(world.env.db, again)
    assert row is not None and row.status == "completed"


def test_reexecution_after_one_file_failed_fetches_only_that_file(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files partly downloaded: one file failed (the others landed and merged); its re-execution fetches that file
    alone from the same export, and ``_since`` moves only then."""
    world, sb, http, request_log, bulk = rig.world, rig.sb, rig.http, rig.log, rig.bulk
    cid = connect_backend(world, sb, http=http, group_id=GROUP)
    real_fetch, failing = bulk_files.fetch_file, []

    def fetch(env: Any, conn: Any, client: Any, job: Any, f: Any, *args: Any) -> Any:
        if f.resource_type == "Condition" and not failing:
            failing.append(f.id)
            raise BulkExportError("connection reset while downloading", status=None)
        return real_fetch(env, conn, client, job, f, *args)

    monkeypatch.setattr(bulk_files, "fetch_file", fetch)
    first, failed = _export(bulk, cid)
    assert failed and failing
    (job,) = _jobs(world, cid)
    states = _file_states(world, job.id)
    assert states[failing[0]] == "pending" and list(states.values()).count("done") == len(states) - 1
    assert cursors.get_mark(world.env.db, cid, STREAM, "*") is None, "_since waits for the failed file"

    request_log.clear()
    again, failed = reexecution.reexecute(bulk, first, from_failure=True)
    assert not failed
    assert len(request_log.paths("/bulk/files")) == 1 and not request_log.paths(KICKOFF, method="POST")
    assert set(_file_states(world, job.id).values()) == {"done"}
    assert cursors.get_mark(world.env.db, cid, STREAM, "*") == _jobs(world, cid)[0].transaction_time
    assert runs.require(world.env.db, again).counts["Condition"]["created"] > 0


def test_reexecution_whose_status_url_is_gone_exports_again_from_the_held_since_bdx08(rig: Rig) -> None:
    """The server dropped the job the failed run was polling (its status URL answers 404): the re-execution kicks
    off a new export with the ``_since`` the failed run asked from (the last completed export's), never one past
    data not received."""
    world, sb, http, request_log, bulk = rig.world, rig.sb, rig.http, rig.log, rig.bulk
    cid = connect_backend(world, sb, http=http, group_id=GROUP)
    _, failed = _export(bulk, cid)
    assert not failed
    mark = cursors.get_mark(world.env.db, cid, STREAM, "*")
    assert mark is not None
    mutate(http, sb, update=3)
    attempts = world.env.retry.max_attempts if world.env.retry else 5
    add_fault(http, sb, "503", path="/bulk/status", times=attempts, retry_after="")
    second, failed = _export(bulk, cid)
    assert failed and _jobs(world, cid)[-1].status == "polling"
    assert cursors.get_mark(world.env.db, cid, STREAM, "*") == mark

    assert sb.state.bulk.cancel(_jobs(world, cid)[-1].status_url.rsplit("/", 1)[-1])  # the server forgot it
    request_log.clear()
    again, failed = reexecution.reexecute(bulk, second, from_failure=True)
    assert not failed
    kickoffs = [u for u in request_log.paths(KICKOFF) if "_elements" not in u.params]  # not BDX-15's member ids
    assert len(kickoffs) == 1 and kickoffs[0].params["_since"].startswith(mark.strftime("%Y-%m-%dT%H:%M:%S"))
    jobs = [j for j in _jobs(world, cid) if j.stream == STREAM]  # not BDX-15's member id export
    assert [j.status for j in jobs] == ["completed", "abandoned", "completed"]
    assert jobs[-1].since_used is not None and jobs[-1].since_used.replace(tzinfo=None) == mark.replace(tzinfo=None)
    assert cursors.get_mark(world.env.db, cid, STREAM, "*") == jobs[-1].transaction_time
    row = runs.require(world.env.db, again)
    assert row.status == "completed" and row.counts["_bulk"]["reruns"] == 1


def test_an_automatic_retry_of_an_export_throttled_at_kick_off_sends_nothing_before_its_retry_after_bdx07(
    rig: Rig,
) -> None:
    """BDX-07/BDX-10: a kick-off refused 429 with a Retry-After past what ehrsync waits notes it as the run's
    ``not_before``; Dagster's automatic retry, started the moment the run failed, sends nothing before it (its step
    fails as held, no row, the hold kept), as a REST run's does. Before, it kicked off again into the throttle."""
    world, sb, http, request_log, bulk = rig.world, rig.sb, rig.http, rig.log, rig.bulk
    cid = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "429", path=KICKOFF, retry_after="3000", times=None)
    first, failed = _export(bulk, cid)
    assert failed and "bulk_export_busy" in failed[0]
    hold = source_holds(world.env.db)[cid].until
    request_log.clear()
    retry, failed = reexecution.reexecute(bulk, first, from_failure=True, retry_number=1)
    assert failed and "bulk export of connection" in failed[0] and "not tried" in failed[0], failed
    assert request_log.paths("/fhir/") == [], "the automatic retry kicked off into the throttle"
    assert runs.get(world.env.db, retry) is None and source_holds(world.env.db)[cid].until == hold
