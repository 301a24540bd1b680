"""Find out whether a note whose answer was lost reached the EHR (DWB-32/33): search by its business identifier.

Only notes carrying the draft's exact identifier count (``lookup``). Found once: ``written`` with the id the server
gave it. Found several times: ``failed`` (a duplicate exists; a person must look). Either stands even when a
person's retry put the note back ``pending`` while the search ran (DWB-63). Not found, or the search failed: left
``unknown`` for a person; never sent again blindly (a search out of its time budget, ``lookup_wait_s``, says so in
the note's ``reason``, after the reason it had, until a later search ends). A server that did not apply the
identifier search (it ignores the parameter) cannot reconcile at all: the note stays ``unknown`` with the reason
code ``identifier_search_ignored`` (an ``accepted`` one once its bounded checks are spent: the EHR may still be
filing it), never ``written`` or ``failed`` on such evidence, unless the search by
patient, type and date (``fallback``, DWB-32/33) finds it exactly, and no other draft not yet written (or written
with its id unknown) as well.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, TypeAlias

from connectors import errors as ce
from connectors.fhir import FhirClient
from connectors.fhir.ids import id_problem, resource_ids
from engine.writeback.config import WritebackConfig
from engine.writeback.fallback import DetailsLookup, drops_identifier, find_by_details, twinned, unclaimed
from engine.writeback.lookup import IdentifierLookup, find_by_identifier
from engine.writeback.provenance import owed_fields, owed_word
from engine.writeback.written import ID_UNKNOWN, not_fhir_reason
from store import AppDatabase
from store.outbox import NoteRecord, StaleNoteError, get_note, transition

__all__ = ["BY_DETAILS", "IGNORED", "TWIN_SAID", "Searched", "found_first", "reconcile", "search", "twin_reason"]

_log = logging.getLogger(__name__)
#: Reason code of an ``unknown`` note whose EHR ignores the identifier search parameter.
IGNORED = "identifier_search_ignored"
#: The ``by`` of the audit detail of a note settled by the patient, type and date search (DWB-32/33).
BY_DETAILS = "patient_type_date"
_FALLBACK = {False: "none_found", True: "undecided"}
#: How the reason of a note ``_twinned`` left begins.
TWIN_SAID = "the search by patient, type and date found a note exactly like this one, but"
#: ``accepted.ACCEPTED`` (it imports this module): a 202 note ehrsync searches again by itself (``recheck``), a
#: person's retry refused meanwhile; its twin reason says so, not that it waits for a person.
_ACCEPTED = "accepted"
_STILL_SEARCHED = (
    "the EHR may still be processing it (202), so it is searched again by itself; which of them the EHR holds is for "
    "a person once those searches are spent"
)
#: How the reason of an ``IGNORED`` note whose POST was answered 202 begins (``_ignored``; ``store.outbox_retry``).
_STILL_FILING = "the EHR accepted this note for later processing (HTTP 202) and may still be filing it"
#: What an ``accepted`` note whose identifier search is ignored says while its checks last (``_ignored``).
_SEARCHED_AGAIN = (
    "ehrsync searches for it again by itself, as for any note accepted for later, and leaves it for a person once "
    "those checks are spent"
)
#: An identifier search's answer, or why it gave none (out of time: ``StepBudgetExceededError``).
Searched: TypeAlias = IdentifierLookup | ce.EhrSyncError
#: How the part of a note's ``reason`` saying its search ran out of time begins (after the reason it had).
_OUT_OF_TIME = "the identifier search did not end within its "


def search(client: FhirClient, note: NoteRecord, config: WritebackConfig) -> Searched:
    """The note's identifier search (``find_by_identifier``), its failure returned rather than raised: a caller that
    searched hands either to ``reconcile``, which never searches a second time in the run (each search may take
    ``lookup_wait_s``, and one that ran out of it or failed says nothing a repeat at once would change)."""
    started = time.monotonic()
    try:
        return replace(find_by_identifier(client, note, config), started=started)
    except ce.EhrSyncError as exc:
        return exc


def found_first(db: AppDatabase, client: FhirClient, note: NoteRecord, config: WritebackConfig) -> NoteRecord | None:
    """Before a POST without If-None-Exist of a note a person confirmed absent (``confirmed_not_in_ehr``: on an EHR
    without conditional create, or ``send_unconditional``): the identifier search, since a person's word that the
    note is not in the chart is no proof (the chart view may lag, another person may have filed it, a 202 may still
    be processing) and nothing else would stop a copy.
    Notes carrying the draft's exact identifier are proof (even from a server ignoring the parameter silently) and
    settle it as ``reconcile`` does: one, ``written``; several, ``duplicate_notes``; never POSTed. Where that search
    cannot decide (the server said it ignored it, or the vendor drops ``identifier``), the patient, type and date
    search does, as for a lost answer (DWB-32/33): exact matches no other note claims settle it so too, unless
    another draft not yet written matches as well (which one the EHR holds is what the person just answered). None
    (send it, as the person confirmed): none found, or a search that failed or ran out of time (it learned nothing
    against their word, and holding the note for a search that keeps failing would leave what they asked for unsent
    with no way on but their word again)."""
    lookup = search(client, note, config)
    if isinstance(lookup, ce.EhrSyncError):
        _log.warning("note %s: the search before a confirmed POST failed (%s); sent as confirmed", note.id, lookup.code)
        return None
    if lookup.matches:
        _log.warning("note %s: confirmed absent, yet the identifier search found it; not sent again", note.id)
        return reconcile(db, client, note, config, lookup)
    if not (lookup.ignored or drops_identifier(db, note)):
        return None
    matches = _fallback(db, client, note, config, lookup)[1]
    if not matches or twinned(db, note, matches):
        return None
    _log.warning("note %s: confirmed absent, yet the patient, type and date search found it; not sent", note.id)
    return _by_details(db, note, matches)


def _fallback(
    db: AppDatabase, client: FhirClient, note: NoteRecord, config: WritebackConfig, lookup: IdentifierLookup
) -> tuple[DetailsLookup | None, list[dict[str, Any]]]:
    """The patient, type and date search (``fallback``, within what ``lookup`` left of ``lookup_wait_s``) and the
    exact matches no other note of the tenant was written as (none unless the search decided)."""
    left = None if lookup.started is None else config.lookup_wait_s - (time.monotonic() - lookup.started)
    details = find_by_details(client, note, config, left)
    matches = unclaimed(db, note, details.matches) if details is not None and details.decided else []
    return details, matches


def reconcile(
    db: AppDatabase,
    client: FhirClient,
    note: NoteRecord,
    config: WritebackConfig,
    lookup: Searched | None = None,
    *,
    last_check: bool = False,
) -> NoteRecord:
    """Settle an ``unknown`` note by its identifier search (``lookup``: one already made for this note in this run,
    or how it failed). An ``accepted`` note (202) the EHR may still be filing, whose identifier search was ignored and
    whose fallback found nothing it could count, keeps its reason code (``accepted.recheck`` searches again, within
    the same bound as every accepted note) unless this is its ``last_check``: then it is ``IGNORED``, for a person."""
    searched_again = note.reason_code == _ACCEPTED and not last_check
    if lookup is None:
        lookup = search(client, note, config)
    if isinstance(lookup, ce.StepBudgetExceededError):
        return _out_of_time(db, note, config, lookup)
    if isinstance(lookup, ce.EhrSyncError):
        _log.warning("note %s: reconciling search failed (%s); left unknown", note.id, lookup.code)
        return note
    if lookup.ignored or (not lookup.matches and drops_identifier(db, note)):
        details, matches = _fallback(db, client, note, config, lookup)  # DWB-32/33: the identifier cannot decide
        if matches:
            if twinned(db, note, matches):
                return _twinned(db, note, IGNORED if lookup.ignored and not searched_again else note.reason_code)
            return _by_details(db, note, matches)
        if lookup.ignored:
            return _ignored(db, note, details, searched_again=searched_again)
    if (found := lookup.found) is not None:
        return _found(db, note, found, {"reconciled": True})
    if len(lookup.matches) > 1:
        return _settled(
            db,
            note,
            "failed",
            {"reconciled": True, "matches": len(lookup.matches)},
            reason_code="duplicate_notes",
            reason=f"{len(lookup.matches)} notes carry this draft's identifier",
        )
    _log.warning("note %s: not found by identifier; left unknown for a person", note.id)
    if (kept := _before_out_of_time(note.reason)) != note.reason:  # this search ended: it no longer ran out of time
        return transition(db, note, "unknown", reason=kept, detail={"reconciled": False})
    return note


def _by_details(db: AppDatabase, note: NoteRecord, matches: list[dict[str, Any]]) -> NoteRecord:
    """``written`` with the one note the patient, type and date search found exactly, ``failed`` for several."""
    if len(matches) > 1:
        reason = f"{len(matches)} notes match this draft's patient, type, date and content"
        detail = {"reconciled": True, "matches": len(matches), "by": BY_DETAILS}
        return _settled(db, note, "failed", detail, reason_code="duplicate_notes", reason=reason)
    return _found(db, note, matches[0], {"reconciled": True, "by": BY_DETAILS})


def _found(db: AppDatabase, note: NoteRecord, found: dict[str, Any], detail: dict[str, Any]) -> NoteRecord:
    """``written`` with the one note a search found: its id, or ``ID_UNKNOWN`` when the EHR names it by an id that is
    no FHIR id (``connectors.fhir.ids``: it could not be stored; its length or type is said, never its text)."""
    resource_id, version_id = resource_ids(found)
    if resource_id is None:
        reason = not_fhir_reason("the search found the note, which the EHR names by", id_problem(found.get("id")))
        _log.warning("note %s: %s; written as %s", note.id, reason, ID_UNKNOWN)
        detail = detail | {"error_code": ID_UNKNOWN}
        fields = owed_fields(None)  # DWB-82: nothing to point at, recorded as ``not_sent`` (never ``unrecorded``)
        detail = detail | owed_word(fields)
        return _settled(db, note, "written", detail, reason_code=ID_UNKNOWN, reason=reason, **fields)
    fields = owed_fields(resource_id)  # DWB-82: a Provenance owed, in the same commit
    return _settled(
        db,
        note,
        "written",
        detail | {"resource_id": resource_id} | owed_word(fields),
        ehr_resource_id=resource_id,
        ehr_version_id=version_id,
        reason_code=None,
        reason=None,
        **fields,
    )


def _twinned(db: AppDatabase, note: NoteRecord, reason_code: str | None) -> NoteRecord:
    """Still ``unknown`` (its reason code kept, or ``IGNORED``): the note found by patient, type and date matches
    another draft of the tenant not yet written just as well (``fallback.twinned``), so which one it is needs a
    person (an ``accepted`` one's once its own searches are spent); never ``written`` on it, never sent again."""
    reason = twin_reason(still_searched=reason_code == _ACCEPTED)
    if note.reason_code == reason_code and note.reason == reason:  # said already: a repeated search adds no event
        return note
    detail = {"reconciled": False, "error_code": reason_code, "fallback": "twinned"}
    return transition(db, note, "unknown", reason_code=reason_code, reason=reason, detail=detail)


def twin_reason(*, still_searched: bool = False) -> str:
    """The reason of a note ``_twinned`` left (``still_searched``: an ``accepted`` one, searched again by itself)."""
    then = _STILL_SEARCHED if still_searched else "which of them the EHR holds needs a person"
    return (
        f"{TWIN_SAID} another draft of the same patient, type, second and content, not yet written (or written with "
        f"its id unknown), matches it as well: {then}"
    )


def _ignored(db: AppDatabase, note: NoteRecord, details: DetailsLookup | None, *, searched_again: bool) -> NoteRecord:
    """``unknown`` (``IGNORED``) for a person: the identifier search was ignored and the fallback found nothing it
    could count (never sent again: even a "none" the server showed it applied every parameter for is a search). An
    ``accepted`` note with checks left (``searched_again``) stays ``accepted``, its reason saying so: the EHR may file
    it later, and a later fallback search may find it (before, it went to a person after its first check)."""
    if details is None:
        said = "it declares no patient, type and date search to look by instead"
    elif details.unreadable is not None:
        said = (
            f"its CapabilityStatement cannot be read for its search parameters ({details.unreadable}), so no search "
            "by patient, type and date was made"
        )
    elif not details.decided:
        said = "the search by patient, type and date did not end whole"
    elif details.applied:
        said = "the search by patient, type and date, every parameter applied, found no note matching it exactly"
    else:
        said = "the search by patient, type and date (not shown applied as asked) found no note matching it exactly"
    reason = f"the EHR ignores the identifier search parameter and {said}: whether it holds this note needs a person"
    code = _ACCEPTED if searched_again else IGNORED
    if searched_again:
        reason = f"{_STILL_FILING}; the EHR ignores the identifier search parameter and {said}: {_SEARCHED_AGAIN}"
    elif note.last_http_status == 202:  # its POST's answer: a note the EHR files later may not be in the chart yet
        reason = f"{_STILL_FILING}; {reason}, once the EHR has had time to file it"
    if note.reason_code == code and note.reason == reason:  # said already: a repeated search adds no event
        return note
    detail = {"reconciled": False, "error_code": IGNORED, "fallback": _FALLBACK[details is None or not details.decided]}
    return transition(db, note, "unknown", reason_code=code, reason=reason, detail=detail)


def _settled(db: AppDatabase, note: NoteRecord, state: str, detail: dict[str, Any], **fields: Any) -> NoteRecord:
    """``written`` or ``failed`` (``duplicate_notes``) on what the search found. A person's retry (DWB-63) may have
    put the note back ``pending`` while the search ran: what it found is proof of what the EHR holds, so it stands
    all the same (the retry's run would otherwise send the note again: one copy more in the chart when the person
    confirmed it absent)."""
    try:
        return transition(db, note, state, detail=detail, **fields)
    except StaleNoteError:
        moved = get_note(db, note.id)
        if moved is None or moved.state != "pending":  # a run took it meanwhile: its state stands
            raise
    _log.warning("note %s: found in the EHR while a retry made it pending; %s all the same", note.id, state)
    return transition(db, moved, state, detail=detail | {"moved_by_retry": True}, **fields)


def _out_of_time(
    db: AppDatabase, note: NoteRecord, config: WritebackConfig, exc: ce.StepBudgetExceededError
) -> NoteRecord:
    """Still ``unknown`` (its reason code kept: ``accepted`` is still searched again by itself), the ``reason`` it had
    followed by the search running out of time: nothing was learned, so nothing is written, failed or sent again.
    A later search that ends takes that part off again (``reconcile``)."""
    _log.warning("note %s: the identifier search ran out of its time budget; left unknown", note.id)
    said = (
        f"{_OUT_OF_TIME}{config.lookup_wait_s:g} s budget (a slow EHR): whether the EHR holds this note is not known "
        "yet; it is never sent again blindly"
    )
    kept = _before_out_of_time(note.reason)
    reason = f"{kept}; {said}" if kept else said
    if note.reason == reason:  # said already: a repeated search adds no event
        return note
    return transition(db, note, "unknown", reason=reason, detail={"reconciled": False, "error_code": exc.code})


def _before_out_of_time(reason: str | None) -> str | None:
    """``reason`` without the part a search out of time added (``_out_of_time``): the note's own reason, or None."""
    if reason is None or _OUT_OF_TIME not in reason:
        return reason
    return reason.split(_OUT_OF_TIME, 1)[0].removesuffix("; ") or None
