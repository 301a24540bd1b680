"""The write-back run of one note (thin: ``engine.writeback.write_note`` does the work) and the outbox asset.

``writeback/note_outbox`` shows the outbox in the UI: each write-back run records a materialization with the
number of notes per state, and materializing the asset by hand counts them now.
"""

from dagster import (
    AssetKey,
    AssetMaterialization,
    Config,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    Output,
    asset,
    op,
)
from pydantic import Field

from engine.writeback import publish_outbox, write_note
from pipelines.defs._shared.environment import sync_environment
from pipelines.defs._shared.schedules import in_process_job
from pipelines.defs._shared.tables import ASSET_OWNERS
from pipelines.defs.writeback.resources import WritebackResource
from pipelines.resources import (
    AppDatabaseResource,
    EhrHttpResource,
    LandingZoneResource,
    SyncPolicyResource,
    WarehouseResource,
)
from store.outbox_reads import outbox_counts

__all__ = ["NOTE_OUTBOX_KEY", "WRITEBACK_JOB", "NoteRunConfig", "note_outbox", "write_back_note"]

WRITEBACK_JOB = "write_back_note"
NOTE_OUTBOX_KEY = AssetKey(["writeback", "note_outbox"])


class NoteRunConfig(Config):
    """The note a run writes back; ``version`` is the one the sensor saw (part of the run key)."""

    note_id: str = Field(min_length=1, max_length=64)
    version: int = Field(ge=1)


def _counts_metadata(counts: dict[str, int]) -> dict[str, MetadataValue]:
    metadata: dict[str, MetadataValue] = {state: MetadataValue.int(n) for state, n in counts.items()}
    metadata["total"] = MetadataValue.int(sum(counts.values()))
    return metadata


@op(name="write_note_to_ehr", description="Write one outbox note to its EHR (gates, conditional create, states).")
def write_back_note_op(
    context: OpExecutionContext,
    config: NoteRunConfig,
    app_db: AppDatabaseResource,
    landing: LandingZoneResource,
    warehouse: WarehouseResource,
    ehr_http: EhrHttpResource,
    policy: SyncPolicyResource,
    writeback: WritebackResource,
) -> Output[str]:
    with sync_environment(app_db, landing, warehouse, ehr_http, policy) as env:
        note = write_note(env, writeback.config(), config.note_id, config.version)
        counts = outbox_counts(env.db)
        copied = publish_outbox(env)  # the analysts' draft_note_outbox table (metadata only)
    if note.version != config.version:
        context.log.info("note %s: v%d -> %s v%d", note.id, config.version, note.state, note.version)
    held = note.state == "pending" and note.reason is not None  # statement unread, key missing, a bad setting ...
    if held:  # ehrsync's own words why it waits (a failed note's reason may echo the server's: not shown here)
        context.log.warning("note %s waits (%s) until %s", note.id, note.reason_code, note.next_attempt_at.isoformat())
    context.log_event(AssetMaterialization(NOTE_OUTBOX_KEY, metadata=_counts_metadata(counts)))
    return Output(
        note.state,
        metadata={
            "note_id": MetadataValue.text(note.id),
            "state": MetadataValue.text(note.state),
            "attempts": MetadataValue.int(note.attempts),
            "reason_code": MetadataValue.text(note.reason_code or ""),
            "reason": MetadataValue.text((note.reason or "") if held else ""),
            "next_attempt_at": MetadataValue.text(note.next_attempt_at.isoformat() if note.state == "pending" else ""),
            "ehr_resource_id": MetadataValue.text(note.ehr_resource_id or ""),
            "draft_note_outbox_rows": MetadataValue.int(copied if copied is not None else -1),
        },
    )


write_back_note = in_process_job(
    write_back_note_op, name=WRITEBACK_JOB, description="Write back one draft note (requested by note_outbox_sensor)."
)


@asset(
    key=NOTE_OUTBOX_KEY,
    group_name="writeback",
    owners=ASSET_OWNERS,
    kinds={"sql"},
    description="Draft notes waiting for or done with write-back, counted per state (no note text).",
)
def note_outbox(app_db: AppDatabaseResource) -> MaterializeResult:  # type: ignore[type-arg]
    with app_db.open() as db:
        counts = outbox_counts(db)
    return MaterializeResult(metadata=_counts_metadata(counts))
