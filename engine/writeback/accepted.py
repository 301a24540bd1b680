"""A create answered 202 Accepted (FHIR R4 http.html#async): processed later, so nothing is known to be stored yet.

The note goes ``unknown`` (``accepted``) at once, committed before the first poll (``still_accepted``): a run killed
while it polls must not leave it ``sending``, which a resumed run would POST again (draft-note §6).

With a status endpoint (``Content-Location``) it is polled, at most ``accepted_polls`` times within
``accepted_wait_s``, ``accepted_poll_s`` apart at least (the server's longer ``Retry-After``, seconds or HTTP-date,
honoured inside that bound; the transport's own retry waits too), until it says how the create ended: a 2xx is the
create's answer (the note is written as for a 201/200), a refusal is the create's refusal (the identifier search
runs first, as for any note that may be stored).
A 202 naming no status endpoint, one still working when the bound is reached (or asking to wait past it), one that
cannot be read, or one answering about the poll rather than the create (404/410: the job unknown there; 401/403/405;
a 2xx naming no outcome; a redirect; an error with no OperationOutcome) leaves the note ``unknown`` with the reason
code ``accepted``: it is due again for the identifier search (``recheck``: backoff, at most ``max_attempts``
checks), found → ``written``; a check counts as an attempt, and after the last one it stays ``unknown``
(``accepted_unconfirmed``) for a person. An EHR ignoring the identifier search gets the same checks (each then by
patient, type and date, ``reconcile``), and after the last one the note is ``identifier_search_ignored``. A run in
a process lacking the token's key makes no check and counts none.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import timedelta

from connectors import errors as ce
from connectors.budgets import step_budget
from connectors.fhir import CreateResult, FhirClient
from engine.checkpoints import checkpoint
from engine.writeback.config import WritebackConfig
from engine.writeback.reconcile import TWIN_SAID, Searched, reconcile, search, twin_reason
from engine.writeback.waiting import held_until
from store import AppDatabase
from store.errors import TokenKeyMissingError
from store.models import utcnow
from store.outbox import NoteRecord, transition

__all__ = [
    "ACCEPTED",
    "ACCEPTED_UNCONFIRMED",
    "await_accepted",
    "ends_the_create",
    "poll_job",
    "recheck",
    "still_accepted",
]

_log = logging.getLogger(__name__)
#: Reason code of an ``unknown`` note answered 202 whose outcome is still to be found (due for the identifier search).
ACCEPTED = "accepted"
#: ... and once its checks are spent: for a person.
ACCEPTED_UNCONFIRMED = "accepted_unconfirmed"
#: Error statuses of a status endpoint about the poll, not the create: the job unknown there, or not shown to us.
_ABOUT_THE_POLL = frozenset({401, 403, 404, 405, 410})
#: What a poll out of its time leaves (the end of its error's message, which ``poll_job`` catches): a note's create
#: is left to the identifier search, a Binary's to its job asked again on the next try (``binary``).
_KEPT = "how the create ended is left to a later check"
#: What bounds the polling (its budget error names it): the write-back's own setting, not a sync step's budget.
_SETTING = "accepted_wait_s of the writeback resource"
_ACCEPTED_202, _FOR_A_PERSON = "the EHR accepted the note (HTTP 202)", ": whether it holds it needs a person"
#: An accepted note's own reason (``still_accepted``), and what a check this process could not make adds to it.
_STILL = "the EHR accepted the note for later processing (HTTP 202) and has not said how it ended"
_NO_KEY = "; its identifier search was not made here, not counted as a check: "


def await_accepted(
    client: FhirClient, result: CreateResult, config: WritebackConfig
) -> CreateResult | ce.FhirError | None:
    """The accepted note create's outcome (a Binary's: ``poll_job``): its 2xx answer, its refusal, or None when it
    is not known within the bounds.

    ``accepted_wait_s`` bounds the polling as a whole, the transport's own waits included (a status endpoint's 503
    asking for 10 min is not waited out by a retry below: the poll ends, the identifier search settles it)."""
    outcome = None if result.status_url is None else poll_job(client, result.status_url, config, "DocumentReference")
    return None if isinstance(outcome, ce.FhirError) and not ends_the_create(outcome) else outcome


def poll_job(
    client: FhirClient, url: str, config: WritebackConfig, resource_type: str
) -> CreateResult | ce.FhirError | None:
    """``await_accepted`` for a status URL, an error of the endpoint returned as it is (``ends_the_create`` says
    whether it is the create's own; 404/410 say the job is not known there)."""
    try:
        with step_budget("polling an accepted create", config.accepted_wait_s, kept=_KEPT, setting=_SETTING):
            return _poll(client, url, config, resource_type)
    except ce.EhrSyncError as exc:  # past the bound, off the FHIR base, unreachable, unreadable: not known
        _log.warning("async status of a %s create did not say how it ended (%s)", resource_type, exc.code)
        return None


def _poll(
    client: FhirClient, url: str, config: WritebackConfig, resource_type: str
) -> CreateResult | ce.FhirError | None:
    """The polls: ``accepted_poll_s`` apart at least, longer when the server's Retry-After asks (a ``Retry-After: 0``
    would otherwise spend every poll back to back, the job no further along)."""
    deadline = time.monotonic() + config.accepted_wait_s
    for poll in range(config.accepted_polls):
        try:
            status = client.async_status(url, resource_type)
        except ce.FhirError as exc:
            if not (exc.is_transient or isinstance(exc, ce.RateLimitedError)):
                return exc
            asked = exc.retry_after
        else:
            if status.result is not None or status.error is not None:
                return status.result or status.error
            asked = status.retry_after
        wait = max(asked or 0.0, config.accepted_poll_s)
        left = deadline - time.monotonic()
        if left <= 0 or wait > left or poll + 1 == config.accepted_polls:
            break  # asked to wait past the bound, or no poll left: the identifier search, not a wasted sleep
        time.sleep(wait)
    return None


def ends_the_create(exc: ce.FhirError) -> bool:
    """Whether a status endpoint's error is the request's own failure: FHIR async's "error status", a 4xx/5xx with
    an OperationOutcome. Anything else is about the poll and says nothing of the create: an answer naming no outcome
    (``AsyncStatusUnreadableError``), a redirect (not followed: a job pinned to another node), a page with no
    OperationOutcome (a proxy refusing the poll), a job the endpoint does not know (404/410: another node, an
    expired URL) or will not show this client (401/403/405)."""
    refusal = 400 <= exc.status < 600 and exc.operation_outcome is not None
    if not refusal or isinstance(exc, ce.AsyncStatusUnreadableError) or exc.status in _ABOUT_THE_POLL:
        _log.warning("async status answered HTTP %s, which says nothing of the create (%s)", exc.status, exc.code)
        return False
    return True


def still_accepted(db: AppDatabase, note: NoteRecord, config: WritebackConfig, *, polled: bool) -> NoteRecord:
    """``sending → unknown`` (``accepted``), committed as soon as the 202 arrives, before any poll: a run killed while
    it polls (``polled``: up to ``accepted_wait_s``) leaves a note the sensor searches for, never one resumed in
    ``sending`` and POSTed again (If-None-Exist cannot see a note the EHR has not filed yet). Due for its first
    check after a backoff, past the polling."""
    wait = config.backoff_s(1) + (config.accepted_wait_s if polled else 0.0)
    note = transition(
        db,
        note,
        "unknown",
        reason_code=ACCEPTED,
        reason=_STILL,
        last_http_status=202,
        maybe_stored=True,
        next_attempt_at=utcnow() + timedelta(seconds=wait),
        detail={"error_code": ACCEPTED, "status_code": 202, "recheck_in_s": round(wait, 3)},
    )
    checkpoint("writeback.unknown")
    return note


def recheck(db: AppDatabase, client: FhirClient, note: NoteRecord, config: WritebackConfig) -> NoteRecord:
    """An ``accepted`` note's identifier search; not found, due again after a longer backoff, or for a person once
    ``max_attempts`` checks found nothing."""
    lookup = search(client, note, config)
    if isinstance(lookup, TokenKeyMissingError):  # this process lacks the token's key: a process with it checks
        return _key_missing(db, config, note, lookup)
    if _NO_KEY in (note.reason or ""):  # a process with the key searched: the reason is the note's own again
        note = replace(note, reason=_STILL)
    last = note.attempts >= config.max_attempts  # this is its last check: an ignored search is then for a person
    done = reconcile(db, client, note, config, lookup, last_check=last)
    if done.state != "unknown" or done.reason_code != ACCEPTED:  # found, duplicates, search ignored (last): settled
        return done
    note = done  # may say its search ran out of time (``reconcile``): checked again all the same, within the bound
    if last:  # the POSTs and the checks so far
        reason, detail = _unconfirmed(lookup, config, note.reason)
        return transition(db, note, "unknown", reason_code=ACCEPTED_UNCONFIRMED, reason=reason, detail=detail)
    wait = config.backoff_s(note.attempts + 1)
    return transition(
        db,
        note,
        "unknown",
        attempts=note.attempts + 1,
        reason=note.reason,
        next_attempt_at=utcnow() + timedelta(seconds=wait),
        detail={"error_code": ACCEPTED, "recheck_in_s": round(wait, 3)},
    )


def _key_missing(db: AppDatabase, config: WritebackConfig, note: NoteRecord, exc: TokenKeyMissingError) -> NoteRecord:
    """A check this process cannot make (the token's key is missing here, ``engine.writeback.waiting``): not counted
    (counted, a few such runs would leave the note for a person, never searched again, while the EHR may hold it),
    due again after ``backoff_cap_s``, at least 30 s (``waiting.held_until``; each such run puts it off again, so it
    never heads the sensor's reads), and the reason names the key id and the setting (never a token)."""
    now, due = held_until(config)
    return transition(
        db,
        note,
        "unknown",
        reason=f"{_STILL}{_NO_KEY}{exc}",
        updated_at=now,
        next_attempt_at=due,
        detail={"error_code": exc.code, "key_id": exc.key_id},
    )


def _unconfirmed(lookup: Searched, config: WritebackConfig, said: str | None) -> tuple[str, dict[str, str]]:
    """The reason and audit detail of an accepted note whose checks are spent, saying what its last search did: one
    out of time, or failed, looked at nothing, and "no search found it" alone reads as "the EHR does not hold it".
    A last search that found a note exactly like it, and like another unsettled draft (``said``: the twin reason),
    keeps saying so: "not found" would have a person confirm it absent and send it again beside its own copy."""
    detail = {"error_code": ACCEPTED_UNCONFIRMED}
    if (said or "").startswith(TWIN_SAID):
        return f"{_ACCEPTED_202}; {twin_reason()}", detail | {"fallback": "twinned"}
    if isinstance(lookup, ce.StepBudgetExceededError):
        last = f"the last one did not end within its {config.lookup_wait_s:g} s budget (lookup_wait_s)"
    elif isinstance(lookup, ce.EhrSyncError):
        last = f"the last one failed ({lookup.code})"
    else:
        return f"{_ACCEPTED_202}; no identifier search found it{_FOR_A_PERSON}", detail
    reason = f"{_ACCEPTED_202} and its identifier searches did not find it, {last}{_FOR_A_PERSON}"
    return reason, detail | {"search_error": lookup.code}
