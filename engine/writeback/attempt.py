"""One write-back attempt of one note: the state machine of draft-note §5/§6, safe to kill at any point.

Every transition is committed (``store.outbox.transition``) before the network call it guards, so a process
killed anywhere resumes from what the database says:

- ``pending``: nothing was sent, unless ``maybe_stored`` says an earlier POST may be stored (then it is searched for
  instead of sent when If-None-Exist is gone or its tries are spent, ``waiting.search_first``). The gates run; a
  "no" is ``blocked``. Then ``pending → sending`` commits, and only then is the note POSTed.
- ``sending``: a POST may have gone out once ``doc_posted`` is committed, just before the DocumentReference POST
  (``store.outbox.transition``, after any Binary is settled). With it (or ``maybe_stored``), conditional create
  repeats the POST (``If-None-Exist`` on the business identifier makes a repeat find the first note); without it the
  note goes to ``unknown``. Without either the note was never POSTed (a run killed while polling its Binary's job, or
  before the POST): it goes on as a first try would (the same Binary job, then one POST), never to ``unknown``. A
  CapabilityStatement it cannot read holds either in ``pending`` (``waiting.wait_for_statement``), ``maybe_stored``
  set when ``doc_posted`` is: only repeated with ``If-None-Exist`` or searched for.
- ``unknown``: reconciled by an identifier search (``reconcile``); nothing found is left for a person. A POST
  whose outcome is unknown (lost answer, 408, 5xx) goes there at once without conditional create, and with it
  once its attempts are spent: ``failed`` would claim the EHR holds nothing.
- a connection that cannot write now: a note never sent is ``failed`` (``connection_<status>``); one whose POST may
  be stored waits in ``pending`` (reason ``connection_<status>``) for a connection that can be active again, and the
  sensor skips it until it is (``store.outbox_queue``); disabled or disconnected, it is ``unknown`` for a person. A
  token this process lacks the key of leaves any note ``pending``, naming the key (``waiting``).

While the note is ``sending`` the run beats (``heartbeat``), so a live POST waiting out long ``Retry-After``
waits is never taken for a stalled one; a 2xx is ``written`` even when another run moved the note (``written``).
A ``written`` note whose Provenance is still owed once due (its run died before sending it) gets one more try at
it (``provenance_due``, DWB-82); any other ``written`` note is returned as it is.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import replace

from connectors import errors as ce
from connectors.fhir import FhirClient
from connectors.writeback.note import identifier_system
from engine.checkpoints import checkpoint
from engine.environment import SyncEnvironment
from engine.writeback.accepted import ACCEPTED, await_accepted, recheck, still_accepted
from engine.writeback.binary import binary_url
from engine.writeback.config import WritebackConfig
from engine.writeback.heartbeat import heartbeat
from engine.writeback.matched import confirm_match, unconfirmed
from engine.writeback.outcomes import ends_note, out_of_tries, retry_later
from engine.writeback.preflight import SendPlan, build_payload, plan_send
from engine.writeback.provenance import ProvenanceGate, owing, send_provenance
from engine.writeback.provenance_due import send_owed
from engine.writeback.reconcile import found_first, reconcile
from engine.writeback.target import NoteTarget, load_target
from engine.writeback.unsure import failed_send, lost_before, may_be_stored, settle_maybe_stored, to_unknown
from engine.writeback.waiting import (
    search_first,
    tries_kept,
    tries_spent,
    wait_for_connection,
    wait_for_key,
    wait_for_setting,
    wait_for_statement,
)
from engine.writeback.written import record_written
from store.errors import TokenKeyMissingError
from store.models import utcnow
from store.outbox import TERMINAL_STATES, NoteRecord, StaleNoteError, get_note, transition
from store.outbox_queue import WAIT_STATUSES

__all__ = ["NoteNotFoundError", "write_note"]

_log = logging.getLogger(__name__)


class NoteNotFoundError(LookupError):
    """No outbox note has this id."""


def write_note(env: SyncEnvironment, config: WritebackConfig, note_id: str, version: int | None = None) -> NoteRecord:
    """Take ``note_id`` as far as it can go now and return it as it ends (any state; never raises for the EHR).

    ``version``: the one the run was requested for; a note that has moved on since belongs to another run (one
    that took it first), so it is returned as it is (a late duplicate run must not resume a live attempt)."""
    note = get_note(env.db, note_id)
    if note is None:
        raise NoteNotFoundError(f"no outbox note {note_id!r}")
    if version is not None and note.version != version:
        return note
    if note.state == "written" and note.provenance_due_at is not None and note.provenance_due_at <= utcnow():
        return _owed(env, config, note)  # DWB-82: a Provenance its writing run never sent (killed, EHR failing)
    if note.state in TERMINAL_STATES or (note.state == "pending" and note.next_attempt_at > utcnow()):
        return note
    try:
        target = load_target(env.db, note, service_write_enabled=config.service_write_enabled)
    except (LookupError, ce.ConfigurationError) as exc:  # a POST that may be stored cannot be searched for now
        state = "unknown" if may_be_stored(note) else "failed"
        return _close(env, note, state, reason_code="connection_missing", reason=str(exc))
    try:
        if target.connection.status != "active" and note.state in ("pending", "sending"):
            return _connection_not_active(env, note, target.connection.status)
        if target.setting_problem is not None and note.state != "unknown":  # a search needs no switch
            return wait_for_setting(env.db, config, note, target.setting_problem, maybe_stored=may_be_stored(note))
        with env.fhir_client(target.connection) as client:
            gate = ProvenanceGate(env, client, note, target)  # DWB-82: owed in the commit that makes it ``written``
            with owing(gate, config.stalled_after_s):
                if note.state == "unknown":
                    check = recheck if note.reason_code == ACCEPTED else reconcile
                    done = check(env.db, client, note, config)
                else:
                    done = _advance(env, config, note, target, client)
                checkpoint("writeback.provenance")
                # whatever made it ``written`` in this run (its answer or a search); optional, never fails it
                return send_provenance(env, client, done, target, config.stalled_after_s)
    except StaleNoteError:  # another run moved the note first (e.g. resumed it as stalled): its state stands
        return _moved(env, note_id)


def _owed(env: SyncEnvironment, config: WritebackConfig, note: NoteRecord) -> NoteRecord:
    try:
        return send_owed(env, config, note)
    except StaleNoteError:
        return _moved(env, note.id)


def _moved(env: SyncEnvironment, note_id: str) -> NoteRecord:
    _log.warning("note %s was moved by another run; leaving it as that run left it", note_id)
    current = get_note(env.db, note_id)
    assert current is not None
    return current


def _connection_not_active(env: SyncEnvironment, note: NoteRecord, status: str) -> NoteRecord:
    """The note's connection cannot write now. Never sent: ``failed`` (``connection_<status>``). A POST that may be
    stored waits for a connection that can be active again (``WAIT_STATUSES``: re-authorized, an admin's retry) and
    is ``unknown`` for a person otherwise (disabled, disconnected: never searchable again by itself)."""
    if not may_be_stored(note):
        return _close(env, note, "failed", reason_code=f"connection_{status}", reason=None)
    if status not in WAIT_STATUSES:
        return _close(env, note, "unknown", reason_code=f"connection_{status}", reason=None)
    return wait_for_connection(env.db, note, status)


def _close(env: SyncEnvironment, note: NoteRecord, state: str, *, reason_code: str, reason: str | None) -> NoteRecord:
    return transition(env.db, note, state, reason_code=reason_code, reason=reason, detail={"error_code": reason_code})


def _advance(
    env: SyncEnvironment, config: WritebackConfig, note: NoteRecord, target: NoteTarget, client: FhirClient
) -> NoteRecord:
    if not note.maybe_stored and tries_spent(config, note):  # ``max_attempts`` lowered since its last try
        return out_of_tries(env.db, config, note, tries_kept(note))  # no POST beyond it (maybe stored: searched)
    with ExitStack() as beating:  # a note in ``sending`` is kept fresh for as long as a run holds it
        if note.state == "sending":  # resumed: from the start, as reading the CapabilityStatement may wait too
            beating.enter_context(heartbeat(env.db, note, config.stalled_after_s))
        try:
            plan = plan_send(note, target, client, config)
            build_payload(note, plan.doc_status, content_type=plan.content_type)  # invalid: fails here, unsent
        except ce.WriteNotSupportedError as exc:
            if may_be_stored(note):  # the gate closed after a POST may have been stored
                return to_unknown(env, config, note, client)  # find out, never resend
            return _close(env, note, "blocked", reason_code=exc.reason_code, reason=str(exc))
        except ce.ConfigurationError as exc:
            if may_be_stored(note):  # a POST may be stored: find out, never fail it blind
                return to_unknown(env, config, note, client)
            return _close(env, note, "failed", reason_code="invalid_note", reason=str(exc))
        except TokenKeyMissingError as exc:  # this process lacks the token's key: a process with it sends the note
            return wait_for_key(env.db, config, note, exc, maybe_stored=may_be_stored(note))
        except ce.NeedsReauthError as exc:  # the grant is gone: a person must authorize again, retrying cannot help
            if may_be_stored(note):  # waits: a run once the connection is active again finds out
                return wait_for_connection(env.db, note, exc.code)
            return _close(env, note, "failed", reason_code=exc.code, reason=None)
        except ce.EhrSyncError as exc:  # the CapabilityStatement could not be read: try again later
            note = replace(note, maybe_stored=may_be_stored(note))  # ``doc_posted``: held as one that may be stored
            if note.maybe_stored and tries_kept(note) >= config.max_attempts:  # a try that POSTed nothing is not spent
                return settle_maybe_stored(env, config, note, client, None)  # spent: as search_first, no answer
            return wait_for_statement(env.db, config, note, exc)
        if search_first(config, note, plan.conditional):  # no blind or extra POST
            return settle_maybe_stored(env, config, note, client, None)
        if _on_word_alone(note, plan) and (found := found_first(env.db, client, note, config)):
            return found  # a person confirmed it absent, yet the EHR holds it: no copy
        if note.state == "pending":
            attempt = note.attempts + 1
            note = transition(env.db, note, "sending", attempts=attempt, doc_posted=False, detail={"attempt": attempt})
            checkpoint("writeback.sending")
            beating.enter_context(heartbeat(env.db, note, config.stalled_after_s))  # a slow live POST too
        elif may_be_stored(note):  # resumed in ``sending``: the killed run's POST may have been stored
            if not plan.conditional:  # without If-None-Exist a repeat could duplicate
                return to_unknown(env, config, note, client)
            note = replace(note, maybe_stored=True)  # kept if this one leaves for ``pending``
        # else resumed, never POSTed (no ``doc_posted``): on as a first try (the same Binary job, then one POST)
        return _send(env, config, note, plan, client)


def _on_word_alone(note: NoteRecord, plan: SendPlan) -> bool:
    """Whether this POST rests on a person's word alone: they confirmed the note absent (``confirmed_not_in_ehr``,
    DWB-63) and it goes without If-None-Exist (an EHR without conditional create, or ``send_unconditional``), so
    nothing would stop a copy of a note they missed in the chart: it is searched for first (``found_first``)."""
    return note.confirmed_not_in_ehr and not plan.conditional and not may_be_stored(note)


def _send(
    env: SyncEnvironment, config: WritebackConfig, note: NoteRecord, plan: SendPlan, client: FhirClient
) -> NoteRecord:
    identifier = f"identifier={identifier_system(note.tenant_id)}|{note.draft_id}"
    posted = False
    maybe_stored = note.maybe_stored  # a resumed note's (``_advance``): the Binary's steps read the row, without it
    try:
        url = None
        if plan.via_binary:
            note, url_or_error = binary_url(env, config, note, client)  # ``note`` as each of its steps left it
            note = replace(note, maybe_stored=note.maybe_stored or maybe_stored)
            if isinstance(url_or_error, ce.EhrSyncError):
                raise url_or_error
            url = url_or_error
        resource = build_payload(note, plan.doc_status, url, plan.content_type)
        # committed before it leaves: a run killed from here on may have POSTed it (a resumed one searches for it)
        posting = plan.post_detail(note.attempts)  # DWB-20: fields the vendor's profile rewrote, by name
        note = transition(env.db, note, "sending", doc_posted=True, maybe_stored=note.maybe_stored, detail=posting)
        checkpoint("writeback.posting")
        posted = True
        result = client.create(resource, if_none_exist=identifier if plan.conditional else None)
    except ce.EhrUnreachableError as exc:  # this try reached nothing: safe to try again later
        note = lost_before(note, exc, posted)
        if note.maybe_stored and ends_note(config, note, exc):
            return settle_maybe_stored(env, config, note, client, exc)
        return retry_later(env.db, config, note, exc)
    except ce.EhrSyncError as exc:
        return failed_send(env, config, lost_before(note, exc, posted), plan, client, exc, posted=posted)
    checkpoint("writeback.sent")
    if result.accepted:  # 202: processed later; the status endpoint, else the identifier search, says how it ended
        note = still_accepted(env.db, note, config, polled=result.status_url is not None)
        outcome = await_accepted(client, result, config)
        if outcome is None:  # not known yet: the identifier search now, and again when due (``recheck``)
            return reconcile(env.db, client, note, config)
        if isinstance(outcome, ce.FhirError):
            return failed_send(env, config, note, plan, client, outcome, posted=True)
        result = outcome
    id_from = None
    if plan.conditional:  # a 200 may be another note the condition matched (DWB-31/33): proof it is this one
        confirmed, lookup = confirm_match(client, note, result, config)
        if confirmed is None:
            return unconfirmed(env.db, client, note, config, result.status, lookup)
        id_from, result = ("search" if lookup is not None else None), confirmed
    # a 2xx is proof, even after another run moved it
    written = record_written(env.db, client, note, result, config, id_from)
    checkpoint("writeback.written")
    return written
