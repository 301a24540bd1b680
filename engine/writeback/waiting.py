"""A note that cannot go on now for a reason outside the EHR waits in ``pending``, never failed or sent blind.

- Its connection cannot write (``needs_reauth``, ``client_rejected``, ``token_undecryptable``) and an earlier POST may
  be stored: it waits for the connection (``wait_for_connection``); the sensor skips it until the connection is
  ``active`` again (``store.outbox_queue``), then a run searches for it or repeats the POST with If-None-Exist.
- This process lacks the key the connection's token is sealed under (``TokenKeyMissingError``: a worker deployed
  without ``INTEGRATIONS_TOKEN_ENC_KEYS_OLD`` during a rotation). As for syncs, the connection's status is not changed
  (the ciphertext may be fine, another process may hold the key), so nothing else tells the operator: the note waits
  with the syncs' error code (``token_undecryptable``) and its message as the reason, naming the key id and the
  setting (never a token), sent or searched for by the first run in a process that has the key
  (``wait_for_key``), whether or not it was ever sent.
- A tenant switch the note's answer hangs on (``enableWrite``, ``enableNoteCreate``, ``allowFinalNotes`` for an
  approved final note) is stored as neither ``true`` nor ``false`` (``"true"``, ``"yes"``, ``1``, ``null``: a row
  written before seeds were checked, or edited by hand). Read as off, the note would be blocked as if the tenant had
  said no; read as on, sent on a guess. It waits instead, the reason naming the setting and the value's JSON type
  (``wait_for_setting``), and goes on as usual once the setting is fixed.
"""

from __future__ import annotations

from datetime import timedelta

from connectors import errors as ce
from engine.writeback.config import WritebackConfig
from engine.writeback.target import TENANT_SETTING_INVALID
from store import AppDatabase
from store.errors import TokenKeyMissingError
from store.models import utcnow
from store.outbox import NoteRecord, transition
from store.outbox_queue import waiting_code

__all__ = ["wait_for_connection", "wait_for_grant", "wait_for_key", "wait_for_setting"]


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
        db, note, "pending", maybe_stored=True, reason_code=code, reason=reason, detail={"error_code": code}
    )


def wait_for_key(
    db: AppDatabase, config: WritebackConfig, note: NoteRecord, exc: TokenKeyMissingError, *, maybe_stored: bool
) -> NoteRecord:
    """``pending`` (``maybe_stored`` kept: a later run searches or repeats with If-None-Exist first), the reason the
    vault's message, due again after ``backoff_cap_s``; its tries unchanged (nothing new reached the EHR). A run
    meeting the same missing key again puts it off once more (a new version: the next run's key): left due as it
    was, such notes would head every read of the sensor (longest due first, ``limit`` rows) for as long as the key
    is missing, and no note due after them would be asked for. A process given the key sends it unasked."""
    return transition(
        db,
        note,
        "pending",
        maybe_stored=maybe_stored,
        reason_code=exc.code,
        reason=str(exc),
        next_attempt_at=utcnow() + timedelta(seconds=config.backoff_cap_s),
        detail={"error_code": exc.code, "key_id": exc.key_id},
    )


def wait_for_setting(
    db: AppDatabase, config: WritebackConfig, note: NoteRecord, problem: str, *, maybe_stored: bool
) -> NoteRecord:
    """``pending`` with ``tenant_setting_invalid`` and ``problem`` as the reason, due again after ``backoff_cap_s``, its
    tries and ``maybe_stored`` kept (nothing reached the EHR): as ``wait_for_key``, each run meeting the bad setting
    puts it off again, so held notes never head the sensor's reads."""
    reason = f"{problem}; the note waits until the setting is fixed"
    return transition(
        db,
        note,
        "pending",
        maybe_stored=maybe_stored,
        reason_code=TENANT_SETTING_INVALID,
        reason=reason,
        next_attempt_at=utcnow() + timedelta(seconds=config.backoff_cap_s),
        detail={"error_code": TENANT_SETTING_INVALID},
    )
