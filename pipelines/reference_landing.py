"""Landing the Practitioner/Organization/Location/Medication resources a run's clinical data references.

The engine reads references inside ``sync_connection``; as Dagster assets the landing and the upsert are two
steps, so this lands the referenced ids (read one by one, deduplicated) and records the file as the type's
pending landing, exactly as ``land_resource_type`` does, so ``upsert_resource_type`` finishes it unchanged.
The references themselves travel between steps in the run's event log (``references`` metadata).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from connectors.errors import FhirGoneError, FhirNotFoundError
from pipelines.sync import SCOPE_NOT_GRANTED, SyncEnvironment, TypeReport, load_connection
from pipelines.sync.cursors import REST_STREAM, set_pending
from pipelines.sync.landing_state import landed_to_json

__all__ = ["NO_REFERENCES", "land_referenced_type", "references_of_type"]

NO_REFERENCES = "no_references"

logger = logging.getLogger(__name__)


def references_of_type(references: Iterable[str], resource_type: str) -> list[str]:
    """Sorted distinct ids of ``Type/id`` references of ``resource_type``."""
    prefix = f"{resource_type}/"
    return sorted({ref[len(prefix) :] for ref in references if ref.startswith(prefix) and len(ref) > len(prefix)})


def land_referenced_type(
    env: SyncEnvironment, connection_id: str, resource_type: str, run_id: str, ids: Iterable[str]
) -> TypeReport:
    """Read each id, land the resources found, and leave the landing pending for the upsert step.

    A target the server no longer has (404/410) is counted in ``not_found``, not fatal; a type the grant
    does not cover is skipped with ``scope_not_granted``, and one nothing referenced with ``no_references``.
    """
    started = time.monotonic()
    conn = load_connection(env.db, connection_id)
    report = TypeReport(resource_type)
    wanted = sorted(set(ids))
    if not wanted:
        report.skipped_reason = NO_REFERENCES
        return report
    scopes = conn.scopes
    if scopes is not None and not scopes.allows(resource_type, "read"):
        report.skipped_reason = SCOPE_NOT_GRANTED
        return report
    client = env.fhir_client(conn)
    source = f"{conn.fhir_base.rstrip('/')}/{resource_type}"
    with env.zone.writer(conn.id, resource_type, run_id, source, conn.tenant_id, seq="refs") as writer:
        for rid in wanted:
            try:
                resource = client.read(resource_type, rid)
            except (FhirNotFoundError, FhirGoneError):
                report.not_found += 1
                logger.info("referenced %s/%s not found for connection %s", resource_type, rid, connection_id)
                continue
            report.fetched += 1
            writer.add_resource(resource)
    landed = writer.result
    report.quarantined, report.bytes, report.files = landed.quarantined, landed.bytes, 1
    report.duration_s = time.monotonic() - started
    pending = {"files": [landed_to_json(landed)], "report": report.as_metadata(), "references": []}
    set_pending(env.db, connection_id, REST_STREAM, resource_type, run_id, None, pending)
    return report
