"""Find out whether a note whose answer was lost reached the EHR (DWB-32/33): search by its business identifier.

Found once: ``written`` with the id the server gave it. Found several times: ``failed`` (a duplicate exists; a
person must look). Not found, or the search failed: left ``unknown`` for a person; never sent again blindly.
"""

from __future__ import annotations

import logging

from connectors import errors as ce
from connectors.fhir import FhirClient
from connectors.writeback.note import identifier_system
from store import AppDatabase
from store.outbox import NoteRecord, transition

__all__ = ["reconcile"]

_log = logging.getLogger(__name__)


def reconcile(db: AppDatabase, client: FhirClient, note: NoteRecord) -> NoteRecord:
    params = {"patient": note.patient_id, "identifier": f"{identifier_system(note.tenant_id)}|{note.draft_id}"}
    try:
        found = [r for page in client.search_pages("DocumentReference", params) for r in page.resources]
    except ce.EhrSyncError as exc:
        _log.warning("note %s: reconciling search failed (%s); left unknown", note.id, exc.code)
        return note
    if len(found) == 1:
        meta = found[0].get("meta") if isinstance(found[0].get("meta"), dict) else {}
        return transition(
            db,
            note,
            "written",
            ehr_resource_id=str(found[0].get("id")),
            ehr_version_id=(meta or {}).get("versionId"),
            reason_code=None,
            detail={"reconciled": True, "resource_id": found[0].get("id")},
        )
    if len(found) > 1:
        return transition(
            db,
            note,
            "failed",
            reason_code="duplicate_notes",
            reason=f"{len(found)} notes carry this draft's identifier",
            detail={"reconciled": True, "matches": len(found)},
        )
    _log.warning("note %s: not found by identifier; left unknown for a person", note.id)
    return note
