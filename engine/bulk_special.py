"""Manifest ``error`` files (BDX-22) and ``deleted`` files (BDX-21): recorded, tombstoned, and what they mean.

An ``error`` file whose OperationOutcomes report ``error``/``fatal`` issues means the export is incomplete for
the types those issues name (``*`` when they name none): the file's row keeps them (``bulk_state``), and the
job's completion holds ``_since`` instead of moving it past data that never arrived.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from connectors.bulk import incomplete_types, iter_numbered_ndjson_lines
from connectors.fhir.resource_types import SYNCED_RESOURCE_TYPES
from connectors.http import parse_instant
from engine import bulk_state
from engine.connection_info import ConnectionInfo
from engine.environment import SyncEnvironment
from engine.reports import BulkReport
from warehouse import Warehouse

TOMBSTONE_BATCH = 1000
_log = logging.getLogger(__name__)


def outcome_lines(path: Path, unusable: list[int]) -> Iterator[tuple[int, dict[str, Any]]]:
    """The OperationOutcomes of an ``error`` file with their line numbers in the file; the numbers of lines that
    are not one (not JSON, or JSON of another shape) are collected in ``unusable`` instead, so one bad line neither
    stops the file nor goes unseen, nor shifts the numbers of the outcomes after it."""
    for number, line in iter_numbered_ndjson_lines(path):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and obj.get("resourceType") == "OperationOutcome":
            yield number, obj
        else:
            unusable.append(number)


def deleted_ref(url: object) -> tuple[str, str] | None:
    """``Type/id`` (possibly absolute, possibly with ``_history``) from a DELETE entry's ``request.url``."""
    if not isinstance(url, str):
        return None
    parts = [p for p in url.split("?", 1)[0].split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2 or not parts[-2][:1].isupper():
        return None
    return parts[-2], parts[-1]


def _delete_entries(bundle: dict[str, Any], number: int, connection_id: str) -> tuple[list[dict[str, Any]], int]:
    """A ``deleted`` line's entries that can be read, and how many cannot: an ``entry`` that is not an array (a
    bare object for one item, as a naive XML-to-JSON converter writes it) refuses the whole line, an entry that is
    not an object itself. Read as no entry, their deletions were dropped with nothing counted."""
    entries = bundle.get("entry")
    if entries is None:
        return [], 0
    if not isinstance(entries, list):
        _log.warning("deleted-file line %d of connection %s: Bundle.entry is not an array", number, connection_id)
        return [], 1
    readable = [e for e in entries if isinstance(e, dict)]
    if len(readable) < len(entries):
        _log.warning("deleted-file line %d of connection %s: an entry is not an object", number, connection_id)
    return readable, len(entries) - len(readable)


def apply_deleted_file(
    wh: Warehouse, conn: ConnectionInfo, path: Path, transaction_time: datetime
) -> tuple[dict[str, int], int]:
    """Tombstone every DELETE entry; returns (tombstones per type, what could not be used: lines that are not
    Bundles, or whose ``entry`` is not an array, and entries that are not objects or name no ``Type/id``).

    ``deleted_at`` is the Bundle's ``meta.lastUpdated`` when present, else the export's ``transactionTime``.
    """
    pending: dict[tuple[str, datetime], list[str]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    bad = 0

    def flush(key: tuple[str, datetime]) -> None:
        ids = pending.pop(key)
        counts[key[0]] += wh.tombstone(conn.id, key[0], ids, key[1], tenant_id=conn.tenant_id)

    for number, line in iter_numbered_ndjson_lines(path):
        try:
            bundle = orjson.loads(line)
        except orjson.JSONDecodeError:
            bundle = None
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            bad += 1
            _log.warning("deleted-file line %d of connection %s is not a Bundle", number, conn.id)
            continue
        meta = bundle.get("meta") if isinstance(bundle.get("meta"), dict) else {}
        when = parse_instant(meta.get("lastUpdated")) if meta else None
        when = when or transaction_time
        entries, unreadable = _delete_entries(bundle, number, conn.id)
        bad += unreadable
        for entry in entries:
            request = entry.get("request")
            if not isinstance(request, dict) or str(request.get("method", "")).upper() != "DELETE":
                continue
            ref = deleted_ref(request.get("url"))
            if ref is None:
                bad += 1
                continue
            key = (ref[0], when)
            pending[key].append(ref[1])
            if len(pending[key]) >= TOMBSTONE_BATCH:
                flush(key)
    for key in list(pending):
        flush(key)
    return dict(counts), bad


def apply_error_file(
    env: SyncEnvironment,
    conn: ConnectionInfo,
    wh: Warehouse,
    job: bulk_state.JobView,
    f: bulk_state.FileView,
    path: Path,
    run_id: str,
    report: BulkReport,
) -> None:
    """Record the file's OperationOutcomes, count them, and keep the types they report as failed on its row."""
    unusable: list[int] = []
    missed: set[str] = set()
    candidates = _export_types(env, job)
    lines = _noting_failures(outcome_lines(path, unusable), f.resource_type, candidates, missed)
    counts = wh.record_errors(conn.id, run_id, f.stored_source, lines)
    path.unlink(missing_ok=True)
    if unusable:
        missed.update(_unreadable(f, unusable, candidates, report))
    report.error_files += 1
    report.error_outcomes += counts.outcomes
    for severity, n in counts.issues.items():
        report.error_issues[severity] = report.error_issues.get(severity, 0) + n
    note = bulk_state.INCOMPLETE_PREFIX + ",".join(sorted(missed)) if missed else None
    bulk_state.update_file(env.db, f.id, state="done", rows=counts.outcomes, quarantined=len(unusable), error=note)


def apply_deleted(
    env: SyncEnvironment,
    conn: ConnectionInfo,
    wh: Warehouse,
    job: bulk_state.JobView,
    f: bulk_state.FileView,
    path: Path,
    report: BulkReport,
) -> None:
    """Tombstone the file's DELETE entries and count them per type."""
    assert job.transaction_time is not None
    deleted, bad = apply_deleted_file(wh, conn, path, job.transaction_time)
    path.unlink(missing_ok=True)
    for rtype, n in deleted.items():
        report.type_report(rtype).deleted += n
    if bad:
        bundles = report.type_report("Bundle")
        bundles.quarantined += bad
        bundles.warnings.append(
            f"deleted file {f.stored_source}: {bad} line(s) or entries could not be read, their deletions not applied "
            "(the weekly reconcile_deletes finds ids the EHR no longer lists)"
        )
    bulk_state.update_file(env.db, f.id, state="done", rows=sum(deleted.values()), quarantined=bad)


def _unreadable(f: bulk_state.FileView, unusable: list[int], candidates: set[str], report: BulkReport) -> set[str]:
    """An error line that cannot be read may have named a type that failed: hold the file's types (its item
    ``type``, or the whole export) incomplete, so ``_since`` does not pass data that may never have arrived."""
    held = incomplete_types(None, f.resource_type, candidates)
    shown = ", ".join(map(str, unusable[:5])) + (", ..." if len(unusable) > 5 else "")
    message = (
        f"error file {f.stored_source}: {len(unusable)} line(s) are not OperationOutcomes (line {shown}); "
        f"held incomplete: {', '.join(sorted(held))}"
    )
    _log.warning("%s", message)
    type_report = report.type_report("OperationOutcome")
    type_report.quarantined += len(unusable)
    type_report.warnings.append(message)
    return held


def _export_types(env: SyncEnvironment, job: bulk_state.JobView) -> set[str]:
    """Types an error outcome may name: those requested, those the manifest lists, and those ehrsync syncs."""
    listed = {f.resource_type for f in bulk_state.all_files(env.db, job.id) if f.kind == "output"}
    return set(job.types) | listed | set(SYNCED_RESOURCE_TYPES)


def _noting_failures(
    lines: Iterator[tuple[int, dict[str, Any]]], item_type: str, candidates: set[str], missed: set[str]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Pass the error file's outcomes through, adding the types their ``error``/``fatal`` issues name to ``missed``."""
    for numbered in lines:
        missed.update(incomplete_types(numbered[1], item_type, candidates))
        yield numbered
