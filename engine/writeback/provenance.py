"""Tell the EHR where each note ehrsync put in the chart came from with a Provenance (DWB-82), best effort: a note
written by the answer to its own POST, and one ``written`` because a search found it (its answer lost, a 202
settled later, a person's confirmed retry found in the chart before its POST, a conditional create's match).

A Provenance is optional: a server that does not advertise Provenance create (or scopes that do not cover it, or a
gate now closed: a switch turned off, the connection not active) gets none, and a failed create never fails the note.

Owed, then sent: the commit that makes a note ``written`` records whether a Provenance is owed
(``provenance_due_at``, set when the gates allow it: ``owed_fields``), and the same run sends it right after and
clears it. The written transitions sit deep in the search paths (``written``, ``reconcile``), so the run's gate is
set once around the run (``owing``, a context variable) instead of being threaded through each. A run killed between
the two leaves it owed: a later run sends it (``provenance_due``), from ``stalled_after_s`` after ``written`` on, and
never while a run's POST of it is alive (it puts the due time off meanwhile: ``provenance_beat``). A refusal for good
(a 4xx other than 408/429, a Provenance that is no valid FHIR) is logged, audited and cleared, as is a 2xx naming no
id (taken all the same); a transient failure (unreachable, lost answer, 5xx, 429/408) is logged and audited and left
owed. Its id is stored on the note (``provenance_id``), and each commit that stops it being owed, or decides at
``written`` that none is, records why (``provenance_outcome``, one of ``OUTCOMES``), so the notes API tells a
Provenance given up from one never allowed or refused (``auth_service.services.note_provenance``).

The capability is what the run's gates read: the CapabilityStatement is cached on the run's client, so a run that
planned a POST reads it no second time; a run that only searched reads it once, and not at all when the granted
scopes cover no Provenance create or a switch is off, nor again once the run's read of it failed (then it stays
owed: a later run reads it again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from connectors import errors as ce
from connectors.fhir import FhirClient
from connectors.writeback import check_note_write, check_switches
from connectors.writeback.gate import scopes_allow_provenance_create
from connectors.writeback.provenance import ProvenanceDraft, build_provenance
from engine.environment import SyncEnvironment
from engine.writeback.provenance_beat import posting
from engine.writeback.target import NoteTarget
from store import AppDatabase
from store.audit import record_audit
from store.errors import TokenKeyMissingError
from store.models import utcnow
from store.outbox import NoteRecord, StaleNoteError, get_note, transition

__all__ = [
    "OUTCOMES",
    "ProvenanceGate",
    "clear_owed",
    "owed_fields",
    "owed_word",
    "owing",
    "post_provenance",
    "provenance_draft",
    "refused_for_good",
    "send_provenance",
    "settled_already",
    "written_elsewhere",
]

_log = logging.getLogger(__name__)
_UNSET = object()
#: Why a ``written`` note owes no Provenance (``provenance_outcome``, revision 0022; the notes API's ``ehrProvenance``):
#: sent (its id stored, or taken without one), its tries spent, a gate closed (a switch off, create not offered or
#: not covered, the connection not active), refused by the EHR for good, or not sent (no id to point at, the
#: connection or tenant gone).
OUTCOMES = ("sent", "given_up", "not_allowed", "refused", "not_sent")


class ProvenanceGate:
    """Whether a Provenance may be sent for the run's note now, decided once a run (the statement read at most once):
    True, False (a gate closed), None (the statement could not be read: not known)."""

    def __init__(self, env: SyncEnvironment, client: FhirClient, note: NoteRecord, target: NoteTarget) -> None:
        self.env, self.client, self.note, self.target = env, client, note, target
        self._decided: Any = _UNSET
        self.written_elsewhere = False  # another run recorded the note ``written``: its Provenance is that run's
        self.key_missing: TokenKeyMissingError | None = None  # this process cannot open the token: nothing asked
        #: a switch the Provenance hangs on stored neither true nor false (``NoteTarget.provenance_problem``): owed
        self.setting_invalid: ce.TenantSettingInvalidError | None = None

    def allows(self) -> bool | None:
        if self._decided is _UNSET:
            try:
                self._decided = _decide(self.env, self.client, self.note, self.target)
            except TokenKeyMissingError as exc:  # not known, as for an unreadable statement (the vault logged it)
                self.key_missing, self._decided = exc, None
            except ce.TenantSettingInvalidError as exc:  # not known: owed until fixed, as a pending note waits
                _log.warning("note %s: its Provenance waits until the tenant setting is fixed: %s", self.note.id, exc)
                self.setting_invalid, self._decided = exc, None
        result: bool | None = self._decided
        return result


_RUN: ContextVar[tuple[ProvenanceGate, float] | None] = ContextVar("ehrsync_provenance_gate", default=None)


@contextmanager
def owing(gate: ProvenanceGate, grace_s: float) -> Iterator[ProvenanceGate]:
    """The run's gate for ``owed_fields`` (``grace_s``: how long the writing run has to send it itself)."""
    token = _RUN.set((gate, grace_s))
    try:
        yield gate
    finally:
        _RUN.reset(token)


def owed_fields(resource_id: str | None) -> dict[str, Any]:
    """The Provenance fields of the commit making a note ``written`` as ``resource_id``: owed unless the run's gate
    says no (none outside a run's ``owing``, or without an id: nothing to point at). A statement the run could not
    read says neither: owed, so a later run reads it again (``provenance_due``), as it does for its own failed read."""
    run = _RUN.get()
    if resource_id is None or run is None:
        return {"provenance_due_at": None, "provenance_outcome": "not_sent"}
    if run[0].allows() is False:
        return {"provenance_due_at": None, "provenance_outcome": "not_allowed"}
    return {
        "provenance_due_at": utcnow() + timedelta(seconds=run[1]),
        "provenance_tries": 0,
        "provenance_outcome": None,
    }


def owed_word(fields: Mapping[str, Any]) -> dict[str, str]:
    """The audit's ``provenance`` for a ``written`` commit with ``owed_fields``: ``owed``, or the outcome decided."""
    return {"provenance": fields.get("provenance_outcome") or "owed"}


def written_elsewhere() -> None:
    """This run found the note recorded ``written`` by another run (``written``: a 2xx after that run's search): the
    Provenance that run owed is that run's to send (it may be POSTing it now), or a later run's once due; never this
    run's too, beside it."""
    if (run := _RUN.get()) is not None:
        run[0].written_elsewhere = True


def send_provenance(
    env: SyncEnvironment, client: FhirClient, note: NoteRecord, target: NoteTarget, grace_s: float
) -> NoteRecord:
    """``note`` (as a run that made it ``written`` left it) with its owed Provenance sent (``provenance_id``) and no
    longer owed, or left owed after a transient failure; as it was when none is owed (never raises for the EHR)."""
    if note.state != "written" or note.provenance_due_at is None:
        return note
    run = _RUN.get()
    gate = run[0] if run is not None else ProvenanceGate(env, client, note, target)
    if gate.written_elsewhere:  # owed by the run that wrote it: left to it (or, once due, to a later run)
        return note
    if (settled := settled_already(env.db, note)) is not None:
        return settled
    if (allowed := gate.allows()) is False:
        return clear_owed(env.db, note, "not_allowed", {})
    if allowed is None:  # the statement unreadable (warned): still owed, a later run reads it again
        return note
    return post_provenance(env, client, note, grace_s)


def post_provenance(env: SyncEnvironment, client: FhirClient, note: NoteRecord, grace_s: float) -> NoteRecord:
    """POST the note's Provenance: created, its id stored and no longer owed; refused for good, no longer owed (a
    warning); a transient failure leaves it owed (a warning). While the POST is alive it never falls due
    (``posting``: put off by ``grace_s``), so no later run sends a second one beside it."""
    try:
        with posting(env.db, note, grace_s):
            result = client.create(build_provenance(provenance_draft(note)))
    except ce.EhrSyncError as exc:
        for_good = refused_for_good(exc)
        warn(env, note, exc, "not created for good" if for_good else "not created yet; still owed")
        return clear_owed(env.db, note, "refused", {"error_code": exc.code}) if for_good else note
    if not result.id:  # taken (a 2xx: created, or accepted for later) all the same: sent again, it would be twice
        _log.warning("note %s: Provenance taken (HTTP %s), its id not named; not sent again", note.id, result.status)
        unnamed = {"provenance_created": True, "id_named": False, "http_status": result.status}
        return clear_owed(env.db, note, "sent", unnamed)
    return clear_owed(env.db, note, "sent", {"provenance_created": True}, provenance_id=result.id)


def provenance_draft(note: NoteRecord) -> ProvenanceDraft:
    """What the Provenance of ``note`` (``written``, its id known) says, recorded now."""
    assert note.ehr_resource_id is not None
    return ProvenanceDraft(
        document_id=note.ehr_resource_id,
        document_version=note.ehr_version_id,
        model=note.produced_by,
        prompt_version=note.prompt_version,
        reviewer_practitioner_id=note.author_id,
        recorded=utcnow(),
    )


def refused_for_good(exc: ce.EhrSyncError) -> bool:
    """A refusal a repeat would meet again: a 4xx other than 408/429, or a Provenance that is no valid FHIR."""
    if isinstance(exc, ce.ConfigurationError):
        return True
    status = exc.status if isinstance(exc, ce.FhirError) else None
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


def settled_already(db: AppDatabase, note: NoteRecord) -> NoteRecord | None:
    """``note`` cleared when nothing is left to send: its Provenance id stored (``sent``), or no id of the note for
    one to point at (``not_sent``); None when a Provenance is still to be sent. The writing run and the owed run's
    one rule."""
    if note.ehr_resource_id and not note.provenance_id:
        return None
    return clear_owed(db, note, "sent" if note.provenance_id else "not_sent", {})


def clear_owed(db: AppDatabase, note: NoteRecord, outcome: str, detail: dict[str, Any], **fields: Any) -> NoteRecord:
    """``note`` no longer owing a Provenance, for ``outcome`` (one of ``OUTCOMES``; with ``fields``, e.g. its id), in
    one audited commit whose ``provenance`` is that outcome, the word ``ehrProvenance`` shows; when another run moved
    it meanwhile (a later run's claim), on the row as it is now: an id learned is never dropped."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown Provenance outcome {outcome!r}")
    detail = {**detail, "provenance": outcome}
    for _ in range(3):
        try:
            return transition(
                db, note, "written", provenance_due_at=None, provenance_outcome=outcome, detail=detail, **fields
            )
        except StaleNoteError:
            current = get_note(db, note.id)
            if current is None or current.state != "written":
                raise
            if current.provenance_id and "provenance_id" not in fields:
                return current
            note = current
    raise StaleNoteError(f"note {note.id} kept moving while its Provenance was recorded")


def _decide(env: SyncEnvironment, client: FhirClient, note: NoteRecord, target: NoteTarget) -> bool | None:
    """What the gates allow now (``check_note_write``, as the run's plan). Scopes covering no Provenance create, or
    a switch off, decide it without the CapabilityStatement: no read (nor a warning of its failure) for a Provenance
    never sent. None: the statement could not be read (a warning). ``TokenKeyMissingError``: this process cannot
    open the token; ``TenantSettingInvalidError``: a switch it hangs on is neither true nor false, read neither as on
    nor as off (``ProvenanceGate`` records both: still owed, and a run that claimed a try gives it back). Read as
    "not allowed", as before, an operator's typo cleared the Provenance of notes already written, for good."""
    granted = target.connection.granted_scopes or ""
    if not scopes_allow_provenance_create(granted):
        return False
    if target.connection.status != "active":
        _log.info("note %s: no Provenance, its connection cannot write now", note.id)
        return False
    if target.provenance_problem is not None:
        raise ce.TenantSettingInvalidError(target.provenance_problem)
    try:
        check_switches(target.flags)  # a switch off decides it: no statement read, no warning of its failure
        return check_note_write(statement(client), granted, target.flags).provenance_create
    except TokenKeyMissingError:  # this process's configuration, not the EHR's statement: the gate's to record
        raise
    except ce.WriteNotSupportedError as exc:  # a gate closed since the note left (a switch off, create withdrawn)
        _log.info("note %s: no Provenance, note write is not allowed now (%s)", note.id, exc.reason_code)
        return False
    except ce.EhrSyncError as exc:  # the statement unreadable: whether Provenance create is offered is not known
        warn(env, note, exc, "not created")
        return None


def statement(client: FhirClient) -> dict[str, Any]:
    """The run's CapabilityStatement (cached: read once a run); the run's failed read of it again, unread (a run that
    could not read it for its plan and then found the note by a search would wait out every retry a second time)."""
    if (failed := client.capabilities_failure) is not None:
        raise failed
    return client.capabilities()


def warn(env: SyncEnvironment, note: NoteRecord, exc: ce.EhrSyncError, said: str) -> None:
    status = getattr(exc, "status", None)
    _log.warning("note %s: Provenance %s (%s, HTTP %s); the note stays written", note.id, said, exc.code, status)
    with env.db.session() as session:
        record_audit(
            session,
            action="note.provenance",
            outcome="warning",
            tenant_id=note.tenant_id,
            actor="writeback",
            connection_id=note.connection_id,
            detail={"note_id": note.id, "error_code": exc.code, "status_code": status},
        )
        session.commit()
