"""The draft-note outbox (draft-note §6): enqueue once per idempotency key, move between states safely.

States: ``pending → sending → written | failed | blocked | unknown``; a transient failure sends a note from
``sending`` back to ``pending`` with a later ``next_attempt_at``. Every change is a compare-and-set on
(state, version) committed with its audit event in one transaction, so a writer that lost a race (or was
killed and resumed) can never move a note twice. Audit details hold ids, states and codes, never the body.
A note whose POST may be stored waits for a connection that cannot write now in ``pending`` (reason code
``connection_<status>``); the sensor's reads (``store.outbox_queue``) skip it until the connection is active.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.audit import record_audit
from store.database import AppDatabase
from store.errors import UnknownConnectionError
from store.models import Connection, NoteOutbox, utcnow
from store.outbox_moves import moving_to

__all__ = [
    "STATES",
    "TERMINAL_STATES",
    "IdempotencyConflictError",
    "NoteInput",
    "NoteRecord",
    "StaleNoteError",
    "enqueue_note",
    "get_note",
    "transition",
]

STATES = ("pending", "sending", "written", "failed", "blocked", "unknown")
TERMINAL_STATES = frozenset({"written", "failed", "blocked"})
#: Columns safe to show analysts and audit readers: everything but the note body and title (PHI).
METADATA_COLUMNS = (
    "id",
    "tenant_id",
    "connection_id",
    "draft_id",
    "loinc_code",
    "content_type",
    "body_bytes",
    "produced_by",
    "doc_status",
    "state",
    "version",
    "attempts",
    "last_http_status",
    "reason_code",
    "ehr_resource_id",
    "ehr_version_id",
    "created_at",
    "updated_at",
)


_OPTIONAL = frozenset({"prompt_version", "source_resources"})


class IdempotencyConflictError(Exception):
    """The idempotency key was already used for a different note (HTTP 409 in the API)."""

    code = "idempotency_conflict"


class StaleNoteError(Exception):
    """The note is no longer in the state/version the caller read: another writer moved it first."""

    code = "stale_note"


@dataclass(frozen=True)
class NoteInput:
    """What the host app asked to file; ``body`` is the text, or base64 for a PDF."""

    tenant_id: str
    connection_id: str
    idempotency_key: str
    patient_id: str
    title: str
    content_type: str
    body: str
    body_bytes: int
    produced_by: str
    loinc_code: str = "11506-3"
    encounter_id: str | None = None
    author_id: str | None = None
    doc_status: str = "preliminary"
    clinician_approved: bool = False
    prompt_version: str | None = None  # DWB-83, with source_resources: left out of the hash when absent
    source_resources: tuple[str, ...] | None = None

    def request_hash(self) -> str:
        """Fingerprint of the whole request: the same key with another body is a conflict, not a replay.
        Absent provenance fields stay out, so notes stored before revision 0008 replay with their old hash."""
        fields = {k: v for k, v in asdict(self).items() if v is not None or k not in _OPTIONAL}
        return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def __repr__(self) -> str:  # the body and title are PHI
        return f"NoteInput(tenant_id={self.tenant_id!r}, idempotency_key={self.idempotency_key!r})"


@dataclass(frozen=True)
class NoteRecord:
    """One outbox row as read; ``body``, ``title`` and ``outcome_issues`` stay out of ``repr`` and ``metadata()``."""

    id: str
    tenant_id: str
    connection_id: str
    idempotency_key: str
    draft_id: str
    patient_id: str
    encounter_id: str | None
    author_id: str | None
    loinc_code: str
    title: str
    content_type: str
    body: str
    body_bytes: int
    produced_by: str
    doc_status: str
    clinician_approved: bool
    state: str
    version: int
    attempts: int
    next_attempt_at: datetime
    last_http_status: int | None
    reason_code: str | None
    reason: str | None
    ehr_resource_id: str | None
    ehr_version_id: str | None
    binary_id: str | None
    binary_status_url: str | None
    binary_posts: int
    prompt_version: str | None
    source_resources: list[str] | None
    provenance_id: str | None
    maybe_stored: bool
    doc_posted: bool
    outcome_issues: dict[str, Any] | None  # PHI (the EHR's words refusing the note): never in ``metadata()``
    send_unconditional: bool  # the next POST without If-None-Exist (``store.outbox_retry``; cleared by ``transition``)
    confirmed_not_in_ehr: bool  # a person's word: searched for before a POST without If-None-Exist (as above)
    provenance_due_at: datetime | None  # DWB-82: a Provenance owed since ``written``, sent from then (None: none)
    provenance_tries: int  # tries later runs made of it (``engine.writeback.provenance_due``)
    provenance_outcome: str | None  # why none is owed now (``engine.writeback.provenance.OUTCOMES``; None: owed)
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: NoteOutbox) -> NoteRecord:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})

    def metadata(self) -> dict[str, Any]:
        """The row without PHI (no body, no title): for the API's state answer, the warehouse and audit."""
        return {name: getattr(self, name) for name in METADATA_COLUMNS} | {"reason": self.reason}

    def __repr__(self) -> str:
        return f"NoteRecord(id={self.id!r}, state={self.state!r}, version={self.version})"


def _by_key(session: Any, tenant_id: str, key: str) -> NoteOutbox | None:
    found: NoteOutbox | None = session.scalar(
        select(NoteOutbox).where(NoteOutbox.tenant_id == tenant_id, NoteOutbox.idempotency_key == key)
    )
    return found


def _replay(existing: NoteOutbox, digest: str) -> NoteRecord:
    if existing.request_hash != digest:
        raise IdempotencyConflictError("this idempotency key was already used for a different note")
    return NoteRecord.of(existing)


def enqueue_note(
    db: AppDatabase, note: NoteInput, *, actor: str, admit: Callable[[], None] | None = None
) -> tuple[NoteRecord, bool]:
    """Store ``note`` as ``pending`` (True) or return the note its key already made (False); never a second one.

    ``admit`` runs only for a note its key has not stored (its exception refuses it, nothing stored): a replay
    answers the stored note whatever a check added since would say of it (the auth service's vendor check).

    The draft's business identifier (DWB-30) is a UUIDv4 chosen here, before any attempt, and reused by all.
    SQLite takes its write lock first (``BEGIN IMMEDIATE``), so racing requests queue; PostgreSQL's unique
    constraint stops the loser of a race, which then answers with the winner's note."""
    digest = note.request_hash()
    try:
        with db.locked_session() as session:
            existing = _by_key(session, note.tenant_id, note.idempotency_key)
            if existing is not None:
                return _replay(existing, digest), False
            _check_connection(session, note)
            if admit is not None:
                admit()
            fields = asdict(note) | {"source_resources": list(note.source_resources or []) or None}
            row = NoteOutbox(**fields, request_hash=digest, draft_id=str(uuid.uuid4()), state="pending")
            session.add(row)
            session.flush()
            record_audit(
                session,
                action="note.enqueue",
                outcome="pending",
                tenant_id=note.tenant_id,
                actor=actor,
                connection_id=note.connection_id,
                detail={"note_id": row.id, "body_bytes": note.body_bytes, "produced_by": note.produced_by},
            )
            session.flush()
            record = NoteRecord.of(row)
    except IntegrityError:  # the same key raced in from another request: answer with that note
        with db.session() as session:
            existing = _by_key(session, note.tenant_id, note.idempotency_key)
            if existing is None:
                raise
            return _replay(existing, digest), False
    return record, True


def _check_connection(session: Session, note: NoteInput) -> None:
    """DWB-12: a note is written only through a connection of its own tenant; one naming another tenant's (or no)
    connection is refused before it is stored, whoever the caller (the API looks the connection up by tenant)."""
    owner = session.scalar(select(Connection.tenant_id).where(Connection.id == note.connection_id))
    if owner != note.tenant_id:
        raise UnknownConnectionError(f"connection {note.connection_id} is no connection of tenant {note.tenant_id}")


def get_note(db: AppDatabase, note_id: str, tenant_id: str | None = None) -> NoteRecord | None:
    """The note, or None (also when it belongs to another tenant than ``tenant_id``)."""
    with db.session() as session:
        row = session.get(NoteOutbox, note_id)
        if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
            return None
        return NoteRecord.of(row)


def transition(
    db: AppDatabase,
    note: NoteRecord,
    to_state: str,
    *,
    detail: Mapping[str, Any] | None = None,
    actor: str = "writeback",
    **fields: Any,
) -> NoteRecord:
    """Move ``note`` (as read) to ``to_state`` and set ``fields``, with its audit event, in one commit. The EHR's
    refusal (``outcome_issues``) describes the step that stored it: any later step clears it unless it sets it.
    ``send_unconditional`` lasts the attempt a person's retry gave it (any move out of ``pending``/``sending`` clears
    it unless it sets it); ``confirmed_not_in_ehr`` until ``written``/``unknown`` (failed/blocked: ``outbox_retry``).

    ``updated_at`` is now unless ``fields`` gives it (a hold measured from it: ``waiting.wait_for_statement``).

    Raises ``StaleNoteError`` when the row is no longer at ``note``'s state and version."""
    if to_state not in STATES:
        raise ValueError(f"unknown outbox state {to_state!r}")
    values = {
        "outcome_issues": None,
        **({} if to_state in ("pending", "sending") else {"send_unconditional": False}),
        **({"confirmed_not_in_ehr": False} if to_state in ("written", "unknown") else {}),
        "updated_at": utcnow(),
        **fields,
        "state": to_state,
        "version": NoteOutbox.version + 1,
    }
    with db.session() as session:
        moved = session.execute(
            update(NoteOutbox)
            .where(NoteOutbox.id == note.id, NoteOutbox.state == note.state, NoteOutbox.version == note.version)
            .values(**values)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            raise StaleNoteError(f"note {note.id} moved past {note.state} v{note.version}")
        moving_to(note.id, note.version + 1)  # the attempt's heartbeat follows its own claim (``outbox_moves``)
        audit = {"note_id": note.id, "from": note.state, "to": to_state, "version": note.version + 1}
        record_audit(
            session,
            action="note.transition",
            outcome=to_state,
            tenant_id=note.tenant_id,
            actor=actor,
            connection_id=note.connection_id,
            detail={**audit, **(detail or {})},
        )
        session.commit()
        row = session.get(NoteOutbox, note.id)
        assert row is not None
        session.refresh(row)
        return NoteRecord.of(row)
