"""A 2xx to the note's POST: the EHR holds the note, so it is ``written``, whatever else happened meanwhile.

The id comes from the answer (``Location``, else the body). A server may name neither (an empty 201, or
``Prefer: return=OperationOutcome`` without ``Location``): the id is then learned by the identifier search, exact
matches only (``lookup``). When that cannot name it (not found, several, the server ignores the parameter, the
search failed) the note is still ``written`` (the 2xx is proof) with no id and the reason code ``id_unknown``,
logged and audited; no Provenance can point at it. So too when the EHR names an id that is no FHIR id
(``connectors.fhir.ids``: longer than 64 characters, not a string): it could not be stored or referenced, and is
never searched for (the server would name the same), never POSTed again; its length or type is said, not its text.

A run whose POST waited long may find that another run moved the note meanwhile (resumed it as stalled, then
``unknown``): its compare-and-set fails (``StaleNoteError``). The 2xx still holds, so the note is read again and,
unless it ended meanwhile (``written``, ``failed``, ``blocked``), recorded ``written`` with this answer's id.
"""

from __future__ import annotations

import logging
from typing import Any

from connectors import errors as ce
from connectors.fhir import CreateResult, FhirClient
from engine.writeback.config import WritebackConfig
from engine.writeback.lookup import find_by_identifier
from engine.writeback.provenance import owed_fields, owed_word, written_elsewhere
from store import AppDatabase
from store.outbox import NoteRecord, StaleNoteError, get_note, transition

__all__ = ["ID_UNKNOWN", "not_fhir_reason", "record_written"]

_log = logging.getLogger(__name__)
#: Reason code of a ``written`` note whose id the EHR did not name and the identifier search could not find.
ID_UNKNOWN = "id_unknown"
_RACE_TRIES = 3


def record_written(
    db: AppDatabase,
    client: FhirClient,
    note: NoteRecord,
    result: CreateResult,
    config: WritebackConfig,
    id_from: str | None = None,
) -> NoteRecord:
    """The note ``written`` after ``result`` (a 2xx), with the id it names or the identifier search finds
    (``id_from``: where the caller learned ``result.id``, for the audit; the answer by default)."""
    resource_id, version_id, reason = result.id, result.version_id, None
    id_from = id_from or ("answer" if resource_id else "search")
    if resource_id is None and result.id_not_fhir is not None:  # a version of no id known names nothing
        said = f"the EHR answered HTTP {result.status} naming the note by"
        version_id, reason = None, not_fhir_reason(said, result.id_not_fhir)
        _log.warning("note %s: %s; written as %s, without Provenance", note.id, reason, ID_UNKNOWN)
    elif resource_id is None:
        resource_id, version_id, reason = _learn_id(client, note, result.status, config)
    fields: dict[str, Any] = {
        "ehr_resource_id": resource_id,
        "ehr_version_id": version_id,
        "last_http_status": result.status,
        "reason_code": None if resource_id else ID_UNKNOWN,
        "reason": reason,
        **owed_fields(resource_id),  # DWB-82: a Provenance owed, in the same commit
    }
    detail: dict[str, Any] = {"http_status": result.status, "dedup_hit": result.status == 200}
    detail |= {"resource_id": resource_id, "id_from": id_from} if resource_id else {"error_code": ID_UNKNOWN}
    return _commit(db, note, fields, detail | owed_word(fields))


def _learn_id(
    client: FhirClient, note: NoteRecord, status: int, config: WritebackConfig
) -> tuple[str | None, str | None, str | None]:
    """``(id, version, None)`` found by the identifier search, else ``(None, None, why)``."""
    try:
        lookup = find_by_identifier(client, note, config)
    except ce.EhrSyncError as exc:
        why = f"the identifier search failed ({exc.code})"
    else:
        if (ref := lookup.found_ref) is not None and ref[0] is not None:
            return *ref, None
        if (problem := lookup.found_not_fhir) is not None:
            why = f"the identifier search found it named by an id that is not a FHIR id ({problem})"
        elif lookup.ignored:
            why = "the EHR ignores the identifier search parameter"
        else:
            why = f"the identifier search found {len(lookup.matches)} notes carrying this draft's identifier"
    _log.warning(
        "note %s: the EHR took it (HTTP %s) but named no id and %s; written as %s, without Provenance",
        note.id,
        status,
        why,
        ID_UNKNOWN,
    )
    return None, None, f"the EHR answered HTTP {status} without naming the note's id, and {why}"


def not_fhir_reason(said: str, problem: str) -> str:
    """The reason of a note ``written`` whose id the EHR named, but no FHIR id (``said``: who named it, ending in
    "by"; ``problem``: its length or type, never its text)."""
    return f"{said} an id that is not a FHIR id ({problem}): its id is unknown, so no Provenance points at it"


def _commit(db: AppDatabase, note: NoteRecord, fields: dict[str, Any], detail: dict[str, Any]) -> NoteRecord:
    """``note → written``; when another run moved it first, again from where it is now (even ``failed`` or
    ``blocked``: a 2xx proves the EHR holds the note, and a host told otherwise would file it twice), unless another
    run has already recorded it written (then the Provenance that run owes is its own to send: none from here)."""
    for _ in range(_RACE_TRIES):
        try:
            return transition(db, note, "written", detail=detail, **fields)
        except StaleNoteError:
            current = get_note(db, note.id)
            if current is None:
                raise
            if current.state == "written":  # its Provenance is that run's (``written_elsewhere``), not sent twice
                _log.info("note %s: created, and another run had already recorded it written", note.id)
                written_elsewhere()
                return current
            _log.warning("note %s: created while another run made it %s; written all the same", note.id, current.state)
            note = current
            detail = {**detail, "moved_by_other_run": current.state}
    raise StaleNoteError(f"note {note.id} kept moving while its created id was recorded")
