"""Find out whether a note whose answer was lost reached the EHR (DWB-32/33): search by its business identifier.

Only notes carrying the draft's exact identifier count (``lookup``). Found once: ``written`` with the id the server
gave it. Found several times: ``failed`` (a duplicate exists; a person must look). Not found, or the search failed:
left ``unknown`` for a person; never sent again blindly. A server that did not apply the identifier search
(it ignores the parameter) cannot reconcile at all: the note stays ``unknown`` with the reason code
``identifier_search_ignored``, never ``written`` or ``failed`` on such evidence.
"""

from __future__ import annotations

import logging

from connectors import errors as ce
from connectors.fhir import FhirClient
from engine.writeback.lookup import IdentifierLookup, find_by_identifier
from store import AppDatabase
from store.outbox import NoteRecord, transition

__all__ = ["IGNORED", "reconcile"]

_log = logging.getLogger(__name__)
#: Reason code of an ``unknown`` note whose EHR ignores the identifier search parameter.
IGNORED = "identifier_search_ignored"


def reconcile(
    db: AppDatabase, client: FhirClient, note: NoteRecord, lookup: IdentifierLookup | None = None
) -> NoteRecord:
    """Settle an ``unknown`` note by its identifier search (``lookup``: one already made for this note)."""
    if lookup is None:
        try:
            lookup = find_by_identifier(client, note)
        except ce.EhrSyncError as exc:
            _log.warning("note %s: reconciling search failed (%s); left unknown", note.id, exc.code)
            return note
    if lookup.ignored:
        if note.reason_code == IGNORED:  # said already: a repeated search adds no event
            return note
        return transition(
            db,
            note,
            "unknown",
            reason_code=IGNORED,
            reason="the EHR ignores the identifier search parameter: whether it holds this note needs a person",
            detail={"reconciled": False, "error_code": IGNORED},
        )
    if (ref := lookup.found_ref) is not None:
        resource_id, version_id = ref
        return transition(
            db,
            note,
            "written",
            ehr_resource_id=resource_id,
            ehr_version_id=version_id,
            reason_code=None,
            reason=None,
            detail={"reconciled": True, "resource_id": resource_id},
        )
    if len(lookup.matches) > 1:
        return transition(
            db,
            note,
            "failed",
            reason_code="duplicate_notes",
            reason=f"{len(lookup.matches)} notes carry this draft's identifier",
            detail={"reconciled": True, "matches": len(lookup.matches)},
        )
    _log.warning("note %s: not found by identifier; left unknown for a person", note.id)
    return note
