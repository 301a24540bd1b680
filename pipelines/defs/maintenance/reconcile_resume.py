"""What a week's deletion reconciliation run asked for again (BDX-31) leaves to the week's earlier runs.

The weekly schedule asks for a slot again, with the slot's run key, when its run was stopped by a throttle of its
source or by another run holding the connection's lock (``reconcile_slots``); Dagster's automatic retry of a run
carries the same key. Such a run reconciles only the types that no earlier run of the key finished: against a
quota that runs out at the same type each time, listing the finished types again spends the calls the unfinished
ones need, up to ``MAX_HELD_RUNS`` times a week.

Safe, because a type's reconcile stands on its own: what it tombstoned (confirmed gone), read back, or whose mark
it cleared is stored when it ends, and no other type's reconcile reads it. A type finished earlier in the week is
as reconciled as it would be had the run not stopped: a deletion after it is next week's, as for any type reconciled
at its hour. The record is the earlier run's step failure metadata (``deleted`` names every type the run was given;
``not_reconciled``, ``read_back_failed`` and ``confirm_failed`` those it did not finish, ``skipped`` those the
grant did not cover, which a grant widened since lets be listed), so a run the retention job pruned, one held
before any request, or one whose record lacks an entry (an older op's), finishes nothing: its types are reconciled
again. A person's run (the CLI, a launch or re-execution from the UI) reconciles every type, as asked.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import RUN_KEY_TAG

from engine.run_tags import TRIGGER_TAG
from pipelines.defs._shared.run_control import automatic_retry

__all__ = ["NOT_FINISHED", "finished_types", "reconciled_earlier"]

#: The failure metadata entries naming the types a run did not finish (each a JSON mapping keyed by type):
#: failed, or skipped on purpose (``skipped``: the grant did not cover the type; it may since).
NOT_FINISHED = ("not_reconciled", "read_back_failed", "confirm_failed", "skipped")


def finished_types(metadata: Mapping[str, object]) -> set[str]:
    """The types a run's failure metadata says it reconciled to the end: given (``deleted``) and not named as
    unfinished (:data:`NOT_FINISHED`); none unless every one of those entries is there as a mapping (a failure
    before the types ran; an op that wrote fewer, or named them otherwise: a type it did not finish must not pass
    for finished)."""
    entries = [_json_keys(metadata.get(name)) for name in ("deleted", *NOT_FINISHED)]
    if any(keys is None for keys in entries):
        return set()
    given, *unfinished = (keys or set() for keys in entries)
    return given.difference(*unfinished)


def _json_keys(entry: object) -> set[str] | None:
    """The keys of a JSON metadata value's mapping (type to count or error); None when it is not one."""
    value = getattr(entry, "value", None)
    return {str(key) for key in value} if isinstance(value, dict) else None


def reconciled_earlier(instance: DagsterInstance, run: DagsterRun, job_name: str, scheduled: str) -> set[str]:
    """The types earlier failed runs of ``run``'s slot (its run key) finished, when no person asked for ``run``
    (its schedule's, trigger ``scheduled``, or Dagster's automatic retry); none for a person's run or one with no
    run key."""
    key = run.tags.get(RUN_KEY_TAG)
    by_schedule = run.parent_run_id is None and run.tags.get(TRIGGER_TAG) == scheduled
    if not key or not (by_schedule or automatic_retry(run)):
        return set()
    earlier = RunsFilter(job_name=job_name, tags={RUN_KEY_TAG: key}, statuses=[DagsterRunStatus.FAILURE])
    done: set[str] = set()
    for other in instance.get_runs(earlier):
        if other.run_id == run.run_id:
            continue
        for entry in instance.all_logs(other.run_id, of_type=DagsterEventType.STEP_FAILURE):
            data = entry.dagster_event.step_failure_data if entry.dagster_event is not None else None
            failure = data.user_failure_data if data is not None else None
            if failure is not None:
                done |= finished_types(failure.metadata)
    return done
