"""A conditional create answered with an existing resource (200): is it this draft's note? (DWB-31/33)

``If-None-Exist: identifier=...`` makes a repeated POST find the note an earlier one stored. But a server that does
not support the ``identifier`` search parameter may drop it from the condition as it does from searches (Spark, its
issue #520): the condition then matches the patient's other notes, and with exactly one the server answers 200 with
it. Recording that as this draft's note would lose the draft silently. So the answer counts only when the resource
it returns carries the draft's exact identifier (and is the one it names); otherwise (another note, or a body that
cannot be read, whatever ``Location`` says) the identifier search decides, exact matches only (``lookup``). A 201
is not checked: the server created a resource for this POST (DWB-33: a server may drop the identifier it was sent).
"""

from __future__ import annotations

import logging

from connectors import errors as ce
from connectors.fhir import CreateResult, FhirClient
from engine.checkpoints import checkpoint
from engine.writeback.config import WritebackConfig
from engine.writeback.lookup import carries_identifier
from engine.writeback.reconcile import Searched, reconcile, search
from store import AppDatabase
from store.outbox import NoteRecord, transition

__all__ = ["MATCH_UNCONFIRMED", "confirm_match", "unconfirmed"]

_log = logging.getLogger(__name__)
#: Reason code of an ``unknown`` note whose conditional create was answered with a resource not proven to be it.
MATCH_UNCONFIRMED = "match_unconfirmed"


def confirm_match(
    client: FhirClient, note: NoteRecord, result: CreateResult, config: WritebackConfig
) -> tuple[CreateResult | None, Searched | None]:
    """``(result, None)`` when ``result`` (a conditional create's 2xx) names this draft's note; else the identifier
    search's ``(its result, lookup)`` when it finds the note, or ``(None, lookup)`` (``lookup``: how it failed when
    it did, for ``unconfirmed`` to settle the note by, never searching again)."""
    if result.created or _names_the_draft(note, result):
        return result, None
    _log.warning(
        "note %s: the EHR answered its conditional create with HTTP %s and a resource not shown to carry this "
        "draft's identifier (it may ignore identifier in If-None-Exist); the identifier search decides",
        note.id,
        result.status,
    )
    lookup = search(client, note, config)
    if isinstance(lookup, ce.EhrSyncError):  # logged by ``reconcile``, which ``unconfirmed`` hands it to
        return None, lookup
    if (ref := lookup.found_ref) is None:
        return None, lookup
    not_fhir = lookup.found_not_fhir  # found, but named by no FHIR id: ``written`` with its id unknown
    return CreateResult(result.status, ref[0], None, lookup.found, ref[1], id_not_fhir=not_fhir), lookup


def unconfirmed(
    db: AppDatabase,
    client: FhirClient,
    note: NoteRecord,
    config: WritebackConfig,
    status: int,
    lookup: Searched | None,
) -> NoteRecord:
    """``sending → unknown`` (``MATCH_UNCONFIRMED``) after ``confirm_match`` found no proof, then the identifier
    reconciliation with the search already made (``lookup``); never ``written`` with the answer's id, never POSTed
    again blindly. The reason and the audit event name no resource id and no PHI."""
    reason = (
        f"the EHR answered the conditional create with HTTP {status} and a resource not shown to carry this "
        "draft's identifier (it may ignore the identifier in If-None-Exist and have matched another note); "
        "whether it holds this note is for a person, or for the identifier search of a write_back_note run "
        "launched for it"
    )
    detail = {"error_code": MATCH_UNCONFIRMED, "status_code": status}
    note = transition(
        db, note, "unknown", reason_code=MATCH_UNCONFIRMED, reason=reason, last_http_status=status, detail=detail
    )
    checkpoint("writeback.unknown")
    return reconcile(db, client, note, config, lookup)


def _names_the_draft(note: NoteRecord, result: CreateResult) -> bool:
    returned = result.resource
    return (
        returned is not None
        and carries_identifier(returned, note)
        and (result.id is None or result.id == returned.get("id"))
    )
