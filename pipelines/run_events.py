"""What earlier steps of the same run recorded, read back from the run's event log.

Landing and upsert of one type are separate steps (possibly separate processes), so facts that one step
learns and a later one needs (a type skipped on purpose, the references found) travel as materialization
metadata: durable, per run, and visible in the UI.
"""

from __future__ import annotations

from collections.abc import Iterator

from dagster import AssetKey, AssetMaterialization, DagsterEventType, DagsterInstance

__all__ = ["REFERENCES", "SKIPPED_REASON", "run_materializations", "run_references", "skipped_reason"]

SKIPPED_REASON = "skipped_reason"
REFERENCES = "references"


def run_materializations(instance: DagsterInstance, run_id: str) -> Iterator[AssetMaterialization]:
    connection = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    for record in connection.records:
        materialization = record.asset_materialization
        if materialization is not None:
            yield materialization


def skipped_reason(instance: DagsterInstance, run_id: str, key: AssetKey) -> str | None:
    """The ``skipped_reason`` the run's materialization of ``key`` recorded, if that step skipped."""
    for materialization in run_materializations(instance, run_id):
        if materialization.asset_key == key:
            entry = materialization.metadata.get(SKIPPED_REASON)
            if entry is not None:
                return str(entry.value)
    return None


def run_references(instance: DagsterInstance, run_id: str) -> set[str]:
    """Every ``Type/id`` reference the run's landing steps found (their ``references`` metadata)."""
    found: set[str] = set()
    for materialization in run_materializations(instance, run_id):
        entry = materialization.metadata.get(REFERENCES)
        if entry is not None and isinstance(entry.value, list):
            found.update(str(ref) for ref in entry.value)
    return found
