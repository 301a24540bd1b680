"""``note_outbox_sensor``: each pending note becomes a write-back run (off by default; docs/WRITEBACK.md), and so
does each ``written`` note whose Provenance is owed and due (DWB-82: its writing run died before sending it).

The choice of notes and the run keys live in ``engine.writeback.queue``; this module turns them into
``RunRequest``s tagged with the connection, tenant and EHR source, and keeps the cursor. A note version whose run
still waits in the run queue (the per-source limit holds it back) is not asked for again: the queue takes that
for a run that died, and each stalled period would add one more run of the same note behind it.
"""

from datetime import UTC, datetime

import orjson
from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from engine.run_tags import run_tags
from engine.writeback.queue import NoteRun, due_runs
from pipelines.defs.writeback.jobs import WRITEBACK_JOB, write_back_note
from pipelines.defs.writeback.resources import WritebackResource
from pipelines.resources import AppDatabaseResource

__all__ = ["NOTE_TAG", "decode_cursor", "note_outbox_sensor", "queued_notes", "run_request"]

NOTE_TAG = "ehrsync/note"


def decode_cursor(cursor: str | None) -> datetime | None:
    """The due time of the newest note requested so far (None: none yet, or an unreadable cursor)."""
    if not cursor:
        return None
    try:
        return datetime.fromisoformat(str(orjson.loads(cursor)["after"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def run_request(run: NoteRun) -> RunRequest:
    tags = run_tags(connection_id=run.connection_id, tenant_id=run.tenant_id, source=run.source, trigger="writeback")
    return RunRequest(
        run_key=run.run_key,
        run_config={"ops": {"write_note_to_ehr": {"config": {"note_id": run.note_id, "version": run.version}}}},
        tags={**tags, NOTE_TAG: run.note_id},
    )


def _note_version(run: DagsterRun) -> tuple[str, int] | None:
    """(note id, version) a write-back run was asked for, from its run config (None: not readable)."""
    node: object = run.run_config or {}
    for key in ("ops", "write_note_to_ehr", "config"):
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict) or not isinstance(node.get("version"), int):
        return None
    return str(node.get("note_id")), int(node["version"])


def queued_notes(instance: DagsterInstance) -> set[tuple[str, int]]:
    """(note id, version) of every write-back run waiting in the run queue (one query)."""
    runs = instance.get_runs(filters=RunsFilter(job_name=WRITEBACK_JOB, statuses=[DagsterRunStatus.QUEUED]))
    return {found for run in runs if (found := _note_version(run)) is not None}


@sensor(
    name="note_outbox_sensor",
    job=write_back_note,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.STOPPED,
    description="Requests a write-back run per note due: a pending or stalled draft, a 202 due for its next check, "
    "a written note whose Provenance is owed (run key: note id + version). Off by default.",
)
def note_outbox_sensor(
    context: SensorEvaluationContext, app_db: AppDatabaseResource, writeback: WritebackResource
) -> SensorResult | SkipReason:
    after = decode_cursor(context.cursor)
    with app_db.open() as db:
        runs, newest = due_runs(db, datetime.now(UTC), after=after, stalled_after_s=writeback.config().stalled_after_s)
    cursor = orjson.dumps({"after": newest.isoformat()}).decode() if newest else context.cursor
    waiting = queued_notes(context.instance) if runs else set()
    runs = [r for r in runs if (r.note_id, r.version) not in waiting]
    if not runs:
        return SensorResult(
            skip_reason=SkipReason("no pending note is due (or its run waits in the queue)"), cursor=cursor
        )
    return SensorResult(run_requests=[run_request(r) for r in runs], cursor=cursor)
