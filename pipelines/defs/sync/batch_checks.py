"""A batch member's per-type events: the materializations and asset checks its own run would have logged.

A per-connection ``incremental_sync`` run evaluates, for every resource type that did not fail, the landing
asset's ``quarantine_within_threshold`` and the warehouse asset's ``no_duplicate_keys`` (clinical types in their
assets, referenced types in the ``referenced_resources`` step). A batch run is one op, not those assets, so Dagster
plans no checks for it; the op logs the same verdicts itself as ``AssetCheckEvaluation`` events, computed by the
same functions, one per member and type. Each carries ``partition=<connection id>``: Dagster keys a run's check
record by (asset, check, run, partition), so without the partition the members of one run would overwrite each
other's record. A failed type gets neither materialization nor check, as in its own run (the step fails there).
The freshness check is not a step of any sync run (its own schedule evaluates it), so batches do not run it.

A type whose sync read, quarantined and deleted nothing logs no events in a batch: its data, and so its last
materialization and check verdicts, are what they were. Dagster's SQLite event log spends ~12 ms per
materialization and ~16 ms per check evaluation (a new engine and connection per write), 60 events per member:
logged for unchanged types too, they were three quarters of a batch member's cost (docs/PERFORMANCE.md, issue 14).
So in a batch "last materialized" means "last changed"; freshness is read from the app database, not from these
events, and a member's own run (``incremental_sync``) still materializes every type.
"""

from collections.abc import Iterable, Iterator

from dagster import AssetCheckEvaluation, AssetCheckSeverity, AssetKey, AssetMaterialization, MetadataValue

from engine import TypeReport
from pipelines.defs._shared.metadata import (
    CheckVerdict,
    duplicate_keys_verdict,
    quarantine_verdict,
    type_report_metadata,
)
from pipelines.defs._shared.tables import row_count, stored_rows
from pipelines.defs.sync.type_assets import DUPLICATE_CHECK, QUARANTINE_CHECK, landing_key, warehouse_key
from pipelines.resources import WarehouseResource
from warehouse import WarehouseError

__all__ = ["BatchEvent", "changed", "check_evaluation", "duplicate_verdicts", "member_events"]

BatchEvent = AssetMaterialization | AssetCheckEvaluation


def check_evaluation(
    check_name: str, verdict: CheckVerdict, asset_key: AssetKey, partition: str
) -> AssetCheckEvaluation:
    """The evaluation an asset's ``AssetCheckResult`` becomes in its own run, for one member's partition."""
    return AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=check_name,
        passed=verdict.passed,
        description=verdict.description,
        metadata=dict(verdict.metadata),
        severity=AssetCheckSeverity.ERROR,
        partition=partition,
    )


_KEY_COUNTS_BY_TYPE = (
    "SELECT resource_type, count(*) AS n_rows, count(*) FILTER (WHERE deleted_at IS NULL) AS live, "
    "count(DISTINCT id) AS n_keys FROM fhir_resources WHERE connection_id = %s GROUP BY resource_type"
)


def duplicate_verdicts(
    warehouse: WarehouseResource, connection_id: str, resource_types: Iterable[str]
) -> dict[str, tuple[int | None, CheckVerdict]]:
    """Per type (live rows, verdict) of ``no_duplicate_keys``: the counts ``Warehouse.key_counts`` gives for one
    type (rows, distinct ids, live rows), for all of the member's types in one grouped query (one query per type
    cost about 0.35 s of CPU per member, more than the member's whole sync). A warehouse that cannot be read fails
    every type's check with the reason (the data is committed; the materializations stand)."""
    types = list(resource_types)
    try:
        with warehouse.open(read_only=True) as wh:
            found = {r["resource_type"]: r for r in wh.iter_rows(_KEY_COUNTS_BY_TYPE, [connection_id])}
    except WarehouseError as exc:
        failed = CheckVerdict(False, f"could not count keys: {exc}", {"error": type(exc).__name__})
        return {t: (None, failed) for t in types}
    verdicts: dict[str, tuple[int | None, CheckVerdict]] = {}
    for resource_type in types:
        row = found.get(resource_type, {})
        rows, live, keys = (int(row.get(k) or 0) for k in ("n_rows", "live", "n_keys"))
        verdicts[resource_type] = (live, duplicate_keys_verdict(rows, keys))
    return verdicts


def changed(report: TypeReport) -> bool:
    """The type's sync read, quarantined or deleted something, so its assets' data or verdicts may differ."""
    return bool(report.fetched or report.quarantined or report.deleted)


def member_events(
    connection_id: str,
    reports: dict[str, TypeReport],
    who: dict[str, MetadataValue],
    *,
    warehouse: WarehouseResource,
    quarantine_max_ratio: float,
) -> Iterator[BatchEvent]:
    """For each type that did not fail and changed something: landing materialization and its quarantine check,
    then warehouse materialization (with ``live_rows``) and its duplicate-keys check, on the member's partition."""
    done = {t: r for t, r in reports.items() if r.error is None and changed(r)}
    if not done:  # nothing new: not even the warehouse read the duplicate-keys check needs
        return
    duplicates = duplicate_verdicts(warehouse, connection_id, done)
    for resource_type, report in done.items():
        metadata = {**type_report_metadata(report), **who}
        landed = row_count(max(report.fetched - report.quarantined, 0))
        key = landing_key(resource_type)
        yield AssetMaterialization(key, partition=connection_id, metadata={**metadata, **landed})
        quarantine = quarantine_verdict(report.fetched, report.quarantined, quarantine_max_ratio)
        yield check_evaluation(QUARANTINE_CHECK, quarantine, key, connection_id)
        live, verdict = duplicates[resource_type]
        key = warehouse_key(resource_type)
        stored = {**metadata, **stored_rows(live)}
        yield AssetMaterialization(key, partition=connection_id, metadata=stored)
        yield check_evaluation(DUPLICATE_CHECK, verdict, key, connection_id)
