"""Notes whose POST may already be in the EHR, and a POST that failed: what may be concluded, and what only the
identifier search may decide (DWB-32/34), out of ``attempt``'s state machine.

A note whose POST may be stored (``may_be_stored``) is never ``failed`` or ``blocked`` before the search looks: that
would claim the EHR holds nothing, and a person would write the note again. Only an answer proving nothing was
stored (429, 503 with ``Retry-After``, a 4xx) lets a failed POST stand (``failed_send``).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from connectors import errors as ce
from connectors.fhir import FhirClient
from engine.checkpoints import checkpoint
from engine.environment import SyncEnvironment
from engine.writeback.config import WritebackConfig
from engine.writeback.lookup import IdentifierLookup
from engine.writeback.outcomes import ends_note, fail_from, outcome_unknown, retry_later
from engine.writeback.preflight import SendPlan
from engine.writeback.reconcile import Searched, reconcile, search
from engine.writeback.waiting import wait_for_connection, wait_for_grant, wait_for_key
from store.errors import TokenKeyMissingError
from store.outbox import NoteRecord, transition

__all__ = ["failed_send", "lost_before", "may_be_stored", "settle_maybe_stored", "to_unknown"]

_log = logging.getLogger(__name__)


def may_be_stored(note: NoteRecord) -> bool:
    """Whether a POST of this note may already be in the EHR: this attempt's left or was about to (``sending`` with
    ``doc_posted``), or an earlier one's answer was lost (``maybe_stored``). Such a note is never failed or blocked
    before the search looks; a ``sending`` note whose DocumentReference was never POSTed is as a ``pending`` one."""
    return note.maybe_stored or (note.state == "sending" and note.doc_posted)


def to_unknown(
    env: SyncEnvironment,
    config: WritebackConfig,
    note: NoteRecord,
    client: FhirClient,
    exc: ce.EhrSyncError | None = None,
    lookup: Searched | None = None,
) -> NoteRecord:
    """``sending`` (or ``pending`` after a POST that may be stored) ``→ unknown``, then the identifier search
    (``reconcile``; ``lookup``: one already made, or how it failed: not made again)."""
    status = getattr(exc, "status", None)
    detail = {"error_code": exc.code, "status_code": status} if exc is not None else None
    fields = {"last_http_status": status} if status is not None else {}
    note = transition(env.db, note, "unknown", reason_code="response_lost", reason=None, detail=detail, **fields)
    checkpoint("writeback.unknown")
    return reconcile(env.db, client, note, config, lookup)


def lost_before(note: NoteRecord, exc: ce.EhrSyncError, posted: bool) -> NoteRecord:
    """``maybe_stored`` when the POST's error is its last try's and an earlier try's answer was lost (the transport
    retries a create with If-None-Exist): that try may be stored whatever the last one says (429, 422, unreachable)."""
    return replace(note, maybe_stored=True) if posted and exc.after_lost_answer else note


def failed_send(
    env: SyncEnvironment,
    config: WritebackConfig,
    note: NoteRecord,
    plan: SendPlan,
    client: FhirClient,
    exc: ce.EhrSyncError,
    *,
    posted: bool,
) -> NoteRecord:
    """After a failed POST: retry later, ``unknown`` + reconcile, or what ``fail_from`` makes of the answer.

    A POST that may have been stored (``outcome_unknown``: lost answer, 408, 5xx) is retried only with
    ``If-None-Exist`` and while attempts are left; otherwise it is ``unknown`` (never ``failed``: the EHR may hold
    it). So ``failed`` only follows answers proving nothing was stored (429, 503 with ``Retry-After``, 4xx). A grant
    refused (``NeedsReauthError``) when a POST may be stored waits for re-authorization, as in ``_advance``."""
    if posted and outcome_unknown(exc):
        retryable = isinstance(exc, ce.TransportError) or (isinstance(exc, ce.FhirError) and exc.is_transient)
        if plan.conditional and retryable and note.attempts < config.max_attempts:
            # the identifier makes the next try find this one; until a search says otherwise it may be stored
            return retry_later(env.db, config, replace(note, maybe_stored=True), exc)
        _log.warning("note %s: the POST's outcome is unknown (%s); reconciling, never resent", note.id, exc.code)
        return to_unknown(env, config, note, client, exc)
    if isinstance(exc, TokenKeyMissingError):  # as in ``_advance``: a process with the key goes on
        return wait_for_key(env.db, config, note, exc, maybe_stored=note.maybe_stored)
    if note.maybe_stored and isinstance(exc, ce.NeedsReauthError):  # as in ``_advance``: no search can look now
        return wait_for_connection(env.db, note, exc.code)
    if note.maybe_stored and ends_note(config, note, exc):
        return settle_maybe_stored(env, config, note, client, exc)
    if isinstance(exc, ce.TransportError):
        # the Binary not known yet (answer lost, a job pending): the note itself was never POSTed, so none can
        # exist (``binary``)
        return retry_later(env.db, config, note, exc)
    return fail_from(env.db, config, note, exc)


def settle_maybe_stored(
    env: SyncEnvironment, config: WritebackConfig, note: NoteRecord, client: FhirClient, exc: ce.EhrSyncError | None
) -> NoteRecord:
    """A refusal (``exc``), or retries spent, after an earlier POST of this note may have been stored (its answer was
    lost, or a killed run sent it): ``failed``/``blocked`` would claim the EHR holds nothing, and a person would write
    the note again. The identifier search decides first: only a search the server applied that finds nothing lets the
    answer stand; otherwise (or with no answer, ``search_first``) the note is ``unknown`` and reconciled (found:
    ``written``). A search the grant's refusal stopped waits for it, never ``unknown`` for a person."""
    lookup = search(client, note, config)  # failed or out of time: handed on as it is, never searched again
    if isinstance(lookup, ce.NeedsReauthError):  # it can look once the grant is back: wait for it, not for a person
        return wait_for_grant(env.db, config, note, lookup)
    if exc is not None and isinstance(lookup, IdentifierLookup) and not lookup.ignored and not lookup.matches:
        return (
            retry_later(env.db, config, note, exc)
            if isinstance(exc, ce.TransportError)
            else fail_from(env.db, config, note, exc)
        )
    return to_unknown(env, config, note, client, exc, lookup)
