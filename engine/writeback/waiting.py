"""A note that cannot go on now for a reason outside the EHR waits in ``pending``, never failed or sent blind.

- Its connection cannot write (``needs_reauth``, ``client_rejected``, ``token_undecryptable``) and an earlier POST may
  be stored: it waits for the connection (``wait_for_connection``); the sensor skips it until the connection is
  ``active`` again (``store.outbox_queue``), then a run searches for it or repeats the POST with If-None-Exist
  (searches, when its tries are spent: ``search_first``).
- This process lacks the key the connection's token is sealed under (``TokenKeyMissingError``: a worker deployed
  without ``INTEGRATIONS_TOKEN_ENC_KEYS_OLD`` during a rotation). As for syncs, the connection's status is not changed
  (the ciphertext may be fine, another process may hold the key), so nothing else tells the operator: the note waits
  with the syncs' error code (``token_undecryptable``) and its message as the reason, naming the key id and the
  setting (never a token), sent or searched for by the first run in a process that has the key
  (``wait_for_key``), whether or not it was ever sent. Each run meeting it puts it off ``backoff_cap_s`` again, never
  less than ``HOLD_MIN_S`` (``held_until``).
- A tenant switch the note's answer hangs on (``enableWrite``, ``enableNoteCreate``, ``allowFinalNotes`` for an
  approved final note) is stored as neither ``true`` nor ``false`` (``"true"``, ``"yes"``, ``1``, ``null``: a row
  written before seeds were checked, or edited by hand). Read as off, the note would be blocked as if the tenant had
  said no; read as on, sent on a guess. It waits instead, the reason naming the setting and the value's JSON type
  (``wait_for_setting``), put off as a note waiting for a key is, and goes on as usual once the setting is fixed.
- The EHR's CapabilityStatement cannot be read before anything is sent (an outage, a 5xx, a statement that is not
  FHIR JSON): the note waits, its tries not counted (a long outage must never fail a note), each consecutive hold
  twice as long as the last up to ``backoff_cap_s``, never less than ``HOLD_MIN_S``, the reason saying why
  (``wait_for_statement``). A resumed ``sending`` note waits so too, with ``maybe_stored`` when its DocumentReference
  POST was recorded (``doc_posted``: it may be in the EHR), its reason then saying it is sent again only with
  If-None-Exist or searched for. It is never given up by itself, not even for a statement that stays unreadable (a
  server may mend it; giving a note up is a person's call), and each hold is logged as a warning with the error code
  for the operator.

A ``sending`` note held before its DocumentReference POST gives back the try counted as it went to ``sending``
(``tries_kept``): the run that sends it counts it again. Kept, a run that died before its POST on the last try
left the note reading 9 tries of 8 once it was sent.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from connectors import errors as ce
from engine.checkpoints import checkpoint
from engine.writeback.config import WritebackConfig
from engine.writeback.outcomes import MAX_REASON, outcome_text
from engine.writeback.target import TENANT_SETTING_INVALID
from store import AppDatabase
from store.errors import TokenKeyMissingError
from store.models import utcnow
from store.outbox import NoteRecord, transition
from store.outbox_queue import waiting_code

__all__ = [
    "HOLD_MIN_S",
    "STATEMENT_UNREAD",
    "held_until",
    "search_first",
    "tries_kept",
    "tries_spent",
    "wait_for_connection",
    "wait_for_grant",
    "wait_for_key",
    "wait_for_setting",
    "wait_for_statement",
]

_log = logging.getLogger(__name__)
#: How the reason of a note held by its pre-flight begins (``wait_for_statement``): how a run knows its last hold
STATEMENT_UNREAD = "the EHR's CapabilityStatement could not be read"
#: The least a CapabilityStatement hold waits, and where its doubling starts when ``backoff_base_s`` is less (0 is
#: allowed: counted retries stop after ``max_attempts``, these holds never do): the write-back sensor's interval
#: (``pipelines/defs/writeback/sensors.py``). Doubling a 0 s wait stayed 0 s: a run, a version and a ``/metadata``
#: read per note on every tick, for ever.
HOLD_MIN_S = 30.0
#: What a statement hold's reason says comes next: for a note never sent, and for one an earlier POST of which may be
#: stored (``maybe_stored``), which is never sent again without If-None-Exist and is searched for when it must not be
#: (the server dropped conditional create) or its tries are spent.
_NEXT = "the note is sent once it can be"
_NEXT_STORED = (
    "an earlier POST of the note may be stored, so once it can be the note is sent again with If-None-Exist (which "
    "finds the stored one) or searched for by its identifier"
)


def held_until(config: WritebackConfig) -> tuple[datetime, datetime]:
    """The ``updated_at`` and ``next_attempt_at`` of a note held for a missing token key or a tenant setting: due
    again after ``backoff_cap_s``, never less than ``HOLD_MIN_S``. Such holds never end by themselves: with a cap of
    0 each run left the note due at once, a new version, an audit event and a run on every sensor tick, for as long
    as the key or the setting stayed so."""
    now = utcnow()
    return now, now + timedelta(seconds=max(config.backoff_cap_s, HOLD_MIN_S))


def tries_kept(note: NoteRecord) -> int:
    """The note's tries as a hold leaves them: a ``sending`` note whose DocumentReference was never POSTed (no
    ``doc_posted``: its run died before the POST, or this one stops before it) gives back the try counted as it went
    to ``sending`` (``attempt.py``), as a request ehrsync withheld does (``outcomes``): the run that sends it counts
    it again."""
    return (
        note.attempts - 1 if note.state == "sending" and not note.doc_posted and note.attempts >= 1 else note.attempts
    )


def tries_spent(config: WritebackConfig, note: NoteRecord) -> bool:
    """Whether a note due for a try has none left under the current ``max_attempts``: ``pending`` with its tries at
    the limit, or resumed in ``sending`` before its DocumentReference POST with the tries it keeps (``tries_kept``)
    at it. A run ends a note as its last try's answer ends it, so this is a ``max_attempts`` lowered since that try
    (the ``writeback`` resource, or one run's config): the note is never POSTed beyond the limit it is read with."""
    resumed_unposted = note.state == "sending" and not note.doc_posted
    return (note.state == "pending" or resumed_unposted) and tries_kept(note) >= config.max_attempts


def search_first(config: WritebackConfig, note: NoteRecord, conditional: bool) -> bool:
    """Whether a ``pending`` note is searched for by its identifier (``unknown``, then ``reconcile``) instead of
    POSTed: an earlier POST of it may be stored (``maybe_stored``) and If-None-Exist is gone (a repeat could
    duplicate it) or its tries are spent. A hold keeps the tries (``tries_kept``) and the POST refused for its grant
    counted as one, so a note refused on its last try wakes with none left; before, the run once its connection was
    active again POSTed it once more (``max_attempts`` + 1 tries, docs/WRITEBACK.md §3). Not counting a POST refused
    401 would not keep that promise: the 401 proves that POST stored nothing, not an earlier one whose answer was
    lost, nor a first try of the same POST the transport repeated, so a note could still wake with its tries spent.
    The search never POSTs: found, ``written``; not found, ``unknown`` for a person, as when a last try's own answer
    is lost; stopped by a refused grant, the note waits for it again (``unsure.settle_maybe_stored``). A note resumed
    in ``sending`` before its POST is searched for so too once its tries are spent (``tries_spent``)."""
    return note.maybe_stored and ((note.state == "pending" and not conditional) or tries_spent(config, note))


def wait_for_grant(db: AppDatabase, config: WritebackConfig, note: NoteRecord, exc: ce.NeedsReauthError) -> NoteRecord:
    """A note whose POST may be stored met a grant it cannot use (``exc``): the key missing here
    (``wait_for_key``), or the connection's refusal (``wait_for_connection``)."""
    if isinstance(exc, TokenKeyMissingError):
        return wait_for_key(db, config, note, exc, maybe_stored=True)
    return wait_for_connection(db, note, exc.code)


def wait_for_connection(db: AppDatabase, note: NoteRecord, status: str) -> NoteRecord:
    """``pending`` with ``maybe_stored`` and the reason ``connection_<status>`` (a ``sending`` note too: its run died
    or met the refusal): the sensor skips it while the connection stays so, and asks for it once it is active again;
    that run searches, or repeats the POST with If-None-Exist, before anything else (never a blind second POST)."""
    code = waiting_code(status)
    if note.state == "pending" and note.maybe_stored and note.reason_code == code:
        return note  # waiting already: no new version, no new audit event
    reason = f"waiting for the connection to be active again (it is {status}); an earlier POST may be stored"
    return transition(
        db,
        note,
        "pending",
        attempts=tries_kept(note),
        maybe_stored=True,
        reason_code=code,
        reason=reason,
        detail={"error_code": code},
    )


def wait_for_key(
    db: AppDatabase, config: WritebackConfig, note: NoteRecord, exc: TokenKeyMissingError, *, maybe_stored: bool
) -> NoteRecord:
    """``pending`` (``maybe_stored`` kept: a later run searches or repeats with If-None-Exist first), the reason the
    vault's message, due again after ``backoff_cap_s``, at least ``HOLD_MIN_S`` (``held_until``); its tries not
    counted (``tries_kept``: nothing new reached the EHR). A run meeting the same missing key again puts it off once
    more (a new version: the next run's key): left due as it was, such notes would head every read of the sensor
    (longest due first, ``limit`` rows) for as long as the key is missing, and no note due after them would be asked
    for. A process given the key sends it unasked."""
    now, due = held_until(config)
    return transition(
        db,
        note,
        "pending",
        attempts=tries_kept(note),
        maybe_stored=maybe_stored,
        reason_code=exc.code,
        reason=str(exc),
        updated_at=now,
        next_attempt_at=due,
        detail={"error_code": exc.code, "key_id": exc.key_id},
    )


def wait_for_setting(
    db: AppDatabase, config: WritebackConfig, note: NoteRecord, problem: str, *, maybe_stored: bool
) -> NoteRecord:
    """``pending`` with ``tenant_setting_invalid`` and ``problem`` as the reason, due again as ``wait_for_key`` is, its
    tries not counted (``tries_kept``) and ``maybe_stored`` kept (nothing reached the EHR): as ``wait_for_key``, each
    run meeting the bad setting puts it off again, so held notes never head the sensor's reads."""
    reason = f"{problem}; the note waits until the setting is fixed"
    now, due = held_until(config)
    return transition(
        db,
        note,
        "pending",
        attempts=tries_kept(note),
        maybe_stored=maybe_stored,
        reason_code=TENANT_SETTING_INVALID,
        reason=reason,
        updated_at=now,
        next_attempt_at=due,
        detail={"error_code": TENANT_SETTING_INVALID},
    )


def wait_for_statement(db: AppDatabase, config: WritebackConfig, note: NoteRecord, exc: ce.EhrSyncError) -> NoteRecord:
    """A note whose CapabilityStatement read failed (``exc``) before anything more was sent: ``pending`` (a resumed
    ``sending`` one too, ``maybe_stored`` set by the caller when its POST may be stored), its tries (less a
    ``sending`` one's never POSTed, ``tries_kept``) and ``maybe_stored`` kept, the reason naming the error's code
    and its cleaned text (``outcome_text``: never an OperationOutcome's diagnostics), due after
    ``_statement_wait``. Counted as a try, a long outage would fail notes never sent; waiting ``backoff_s(1)`` each
    time, as before, a note asked the EHR every 30 s for ever."""
    status = getattr(exc, "status", None)
    note = replace(note, attempts=tries_kept(note))  # as the hold leaves them: its wait starts from them too
    wait = _statement_wait(config, note, getattr(exc, "retry_after", None))
    reason = f"{STATEMENT_UNREAD} ({exc.code}: {_said(exc)}): {_NEXT_STORED if note.maybe_stored else _NEXT}"
    if len(reason) > MAX_REASON:
        reason = f"{reason[: MAX_REASON - 1]}…"
    _log.warning(
        "note %s waits %.0f s: the EHR's CapabilityStatement could not be read (%s, HTTP %s)",
        note.id,
        wait,
        exc.code,
        status,
    )
    now = utcnow()  # the hold's ``updated_at`` too: its wait is read back exactly (``_statement_wait``)
    note = transition(
        db,
        note,
        "pending",
        attempts=note.attempts,
        maybe_stored=note.maybe_stored,
        updated_at=now,
        next_attempt_at=now + timedelta(seconds=wait),
        last_http_status=status,
        reason_code=exc.code,
        reason=reason,
        detail={"error_code": exc.code, "status_code": status, "retry_in_s": round(wait, 3)},
    )
    checkpoint("writeback.pending")
    return note


def _said(exc: ce.EhrSyncError) -> str:
    """What the reason says of ``exc``: ``outcome_text``, or for a token refresh the read set off and the token
    endpoint refused, its ``error`` code alone (RFC 6749 shaped, credential-free): its ``error_description`` is the
    server's own words, which may name the patient (docs/ARCHITECTURE.md), and the reason is answered by the admin
    API and shown in the run's output metadata."""
    if isinstance(exc, ce.OAuthError):
        status = f" (HTTP {exc.status})" if exc.status else ""
        return f"the token endpoint answered {exc.error}{status}"
    return outcome_text(exc)


def _statement_wait(config: WritebackConfig, note: NoteRecord, retry_after: float | None) -> float:
    """The first hold waits as a retry of the note would (``backoff_s`` of its tries); each next one twice the last
    hold's wait (read from the note: ``next_attempt_at - updated_at``, both set by that hold), up to
    ``backoff_cap_s``; none less than ``HOLD_MIN_S``. The server's ``Retry-After`` (up to ``retry_after_cap_s``) is
    waited at least."""
    wait = max(config.backoff_s(max(note.attempts, 1)), HOLD_MIN_S)
    if (note.reason or "").startswith(STATEMENT_UNREAD):
        waited = round((note.next_attempt_at - note.updated_at).total_seconds(), 3)
        wait = max(wait, min(2 * waited, max(config.backoff_cap_s, HOLD_MIN_S)))
    if retry_after is not None and retry_after >= 0:
        wait = max(wait, config.backoff_s(1, retry_after))
    return wait
