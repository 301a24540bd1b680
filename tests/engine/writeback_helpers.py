"""Set-up for write-back tests: a tenant with write switched on, a connection allowed to create notes, notes."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update

from connectors.fhir import FhirClient
from connectors.writeback.note import identifier_system
from engine import CRASH_ENV
from engine.writeback import WritebackConfig
from engine.writeback.provenance import OUTCOMES
from engine.writeback.queue import due_runs
from store.models import AuditEvent, NoteOutbox, Tenant, utcnow
from store.outbox import NoteInput, NoteRecord, enqueue_note, get_note
from tests.engine.helpers import PATIENT_SCOPE, SandboxLike, SyncWorld, connect_backend, connect_patient

WRITE_SCOPE = f"{PATIENT_SCOPE} patient/DocumentReference.c patient/Encounter.rs"
ON = {"enableWrite": True, "enableNoteCreate": True}
# Retries that do not wait: the backoff is the rule under test, not the clock.
FAST = WritebackConfig(service_write_enabled=True, backoff_base_s=0.0, backoff_cap_s=0.0, max_attempts=3)
REPO = Path(__file__).resolve().parents[2]
#: The child's app database URL (``writeback_driver``), when the parent's world is not on its SQLite file.
APP_DB_ENV = "EHRSYNC_TEST_APP_DB_URL"
NOTE_TEXT = "Patient reports improved sleep. Continue current plan."


def read_note(world: SyncWorld, note_id: str) -> NoteRecord:
    """The note as stored now (it must exist)."""
    note = get_note(world.env.db, note_id)
    assert note is not None
    return note


def set_tenant(world: SyncWorld, **switches: Any) -> None:
    """The tenant's ``smartFhir`` switches (write on by default; pass False to close one)."""
    with world.env.db.session() as session:
        tenant = session.get(Tenant, world.tenant_id)
        assert tenant is not None
        tenant.settings = {"practice_settings": {"smartFhir": {**ON, **switches}}}  # the seed format, as stored
        session.commit()


def writable_connection(world: SyncWorld, sandbox: SandboxLike, http: httpx.Client, **kwargs: Any) -> str:
    set_tenant(world)
    kwargs.setdefault("scope", WRITE_SCOPE)
    return connect_patient(world, sandbox, http=http, **kwargs)


def binary_pdf_note(world: SyncWorld, sandbox: SandboxLike, http: httpx.Client) -> tuple[str, NoteRecord]:
    """A backend connection allowed to create Binary (the sandbox lets patient tokens create none) and a PDF note
    over 100 bytes: with ``inline_max_bytes=100`` it goes through a Binary created first (DWB-18)."""
    set_tenant(world)
    conn = connect_backend(world, sandbox, http=http, scope="system/*.rs system/DocumentReference.c system/Binary.c")
    pdf = b"%PDF-1.4\n" + b"0" * 200 + b"\n%%EOF"
    return conn, enqueue(world, conn, pdf=pdf, patient_id=sandbox.admin.patients()[0])


def held_s(note: NoteRecord) -> float:
    """How long the hold that left ``note`` puts it off (its ``next_attempt_at`` less its ``updated_at``)."""
    return (note.next_attempt_at - note.updated_at).total_seconds()


def due_now(world: SyncWorld, note_id: str) -> None:
    """The note's wait has passed: its ``updated_at`` and ``next_attempt_at`` as far back as it had left, plus 1 s."""
    note = get_note(world.env.db, note_id)
    assert note is not None
    time_passes(
        world, note_id, (max(note.next_attempt_at - utcnow(), timedelta(0)) + timedelta(seconds=1)).total_seconds()
    )


def provenance_due_now(world: SyncWorld, note_id: str) -> None:
    """Time has passed: the note's owed Provenance is due now (as ``stalled_after_s`` after ``written`` would)."""
    with world.env.db.session() as session:
        past = utcnow() - timedelta(seconds=1)
        session.execute(update(NoteOutbox).where(NoteOutbox.id == note_id).values(provenance_due_at=past))
        session.commit()


def asked_for(world: SyncWorld, note_id: str) -> bool:
    """Whether the note sensor, asked now, asks for a run of ``note_id``."""
    runs, _ = due_runs(world.env.db, utcnow(), after=None, stalled_after_s=FAST.stalled_after_s)
    return any(r.note_id == note_id for r in runs)


def note_audit_details(world: SyncWorld) -> list[dict[str, Any]]:
    """The details of every note audit event (``note.*``), oldest first."""
    with world.env.db.session() as session:
        details = session.scalars(
            select(AuditEvent.detail).where(AuditEvent.action.like("note.%")).order_by(AuditEvent.id)
        ).all()
    return [d for d in details if isinstance(d, dict)]


def provenance_audits(world: SyncWorld, word: str) -> list[dict[str, Any]]:
    """The details of the note audit events whose ``provenance`` says ``word`` (``waiting_for_key``...)."""
    return [d for d in note_audit_details(world) if d.get("provenance") == word]


def provenance_said(world: SyncWorld, note_id: str) -> list[str]:
    """What ``note_id``'s audit events said of its Provenance as the note was written or what it owed cleared
    (``owed`` or one of ``OUTCOMES``), oldest first."""
    return [
        str(d["provenance"])
        for d in note_audit_details(world)
        if d.get("note_id") == note_id and d.get("provenance") in ("owed", *OUTCOMES)
    ]


def time_passes(world: SyncWorld, note_id: str, seconds: float) -> None:
    """``seconds`` pass for the note: its ``updated_at`` and ``next_attempt_at`` that much earlier."""
    note = get_note(world.env.db, note_id)
    assert note is not None
    shift = timedelta(seconds=seconds)
    with world.env.db.session() as session:
        session.execute(
            update(NoteOutbox)
            .where(NoteOutbox.id == note_id)
            .values(updated_at=note.updated_at - shift, next_attempt_at=note.next_attempt_at - shift)
        )
        session.commit()


def patient_of(world: SyncWorld, connection_id: str) -> str:
    from store.models import Connection

    with world.env.db.session() as session:
        conn = session.get(Connection, connection_id)
        assert conn is not None and conn.patient_id
        return conn.patient_id


def enqueue(world: SyncWorld, connection_id: str, **overrides: Any) -> NoteRecord:
    text = overrides.pop("text", NOTE_TEXT)
    pdf: bytes | None = overrides.pop("pdf", None)
    body, ctype = (base64.b64encode(pdf).decode(), "application/pdf") if pdf else (text, "text/plain; charset=utf-8")
    fields: dict[str, Any] = {
        "tenant_id": world.tenant_id,
        "connection_id": connection_id,
        "idempotency_key": uuid.uuid4().hex,
        "patient_id": overrides.pop("patient_id", None) or patient_of(world, connection_id),
        "title": "Follow-up visit",
        "content_type": ctype,
        "body": body,
        "body_bytes": len(pdf) if pdf else len(text.encode()),
        "produced_by": "scribe-model v3 / prompt 12",
        **overrides,
    }
    record, created = enqueue_note(world.env.db, NoteInput(**fields), actor="test")
    assert created
    return record


def server_notes(world: SyncWorld, connection_id: str, sandbox: SandboxLike, note: NoteRecord) -> list[dict[str, Any]]:
    """The DocumentReferences on the EHR carrying this draft's business identifier."""
    client = FhirClient(sandbox.fhir_base, world.env.vault.token_source(connection_id), http=world.env.http)
    params = {"identifier": f"{identifier_system(note.tenant_id)}|{note.draft_id}"}
    return [r for page in client.search_pages("DocumentReference", params) for r in page.resources]


def patient_notes(world: SyncWorld, connection_id: str, sandbox: SandboxLike) -> list[dict[str, Any]]:
    """Every DocumentReference of the connection's patient on the EHR (whatever its identifier)."""
    client = FhirClient(sandbox.fhir_base, world.env.vault.token_source(connection_id), http=world.env.http)
    params = {"patient": patient_of(world, connection_id)}
    return [r for page in client.search_pages("DocumentReference", params) for r in page.resources]


def first_encounter(world: SyncWorld, connection_id: str, sandbox: SandboxLike) -> str:
    client = FhirClient(sandbox.fhir_base, world.env.vault.token_source(connection_id), http=world.env.http)
    patient = patient_of(world, connection_id)
    for page in client.search_pages("Encounter", {"patient": patient}):
        for resource in page.resources:
            return str(resource["id"])
    raise AssertionError(f"the sandbox has no Encounter for patient {patient}")


def run_writeback_child(
    root: Path, world, note_id: str, crash_at: str, inline_max_bytes: int | None = None, app_db_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``tests.engine.writeback_driver`` in a real process, SIGKILLed at the checkpoint ``crash_at``
    (``inline_max_bytes``: notes over it go through a Binary; ``app_db_url``: the world's, unless its SQLite file)."""
    env = {**{k: v for k, v in os.environ.items() if k not in (CRASH_ENV, APP_DB_ENV)}, CRASH_ENV: crash_at}
    if app_db_url is not None:
        env[APP_DB_ENV] = app_db_url
    cmd = [sys.executable, "-m", "tests.engine.writeback_driver", str(root), world.cipher_key.hex()]
    cmd += [world.tenant_id, note_id, *([str(inline_max_bytes)] if inline_max_bytes is not None else [])]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
