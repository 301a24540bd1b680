"""Draft notes from host apps into the write-back outbox (issue 13): validate, store ``pending`` once per key.

Nothing here calls the EHR: the Dagster ``note_outbox_sensor`` turns each pending note into a write-back run
(engine/writeback). The answer is the note's state without its body (PHI stays in the outbox row).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from auth_service.services.connections import get_connection
from auth_service.services.context import ServiceContext
from auth_service.services.errors import ConnectionUnusableError, InvalidInputError, NotFoundError, ServiceError
from auth_service.services.note_provenance import ehr_provenance
from auth_service.services.pdf_base64 import decoded_size, refuse_not_base64
from auth_service.services.providers_port import plugin_write_profile
from connectors.errors import WriteNotSupportedError
from connectors.writeback.note import NOTE_TYPES, identifier_system
from connectors.writeback.vendor_check import PDF, check_against_profile, check_vendor_writes_notes, persona_of
from store.errors import UnknownConnectionError
from store.models import Connection, ConnectionKind, ConnectionStatus
from store.outbox import IdempotencyConflictError, NoteInput, NoteRecord, enqueue_note, get_note
from store.outbox_retry import RetryRefusedError, retry_note

__all__ = [
    "MAX_PDF_BYTES",
    "MAX_SOURCES",
    "NoteConflictError",
    "NoteNotAcceptedError",
    "NoteRetryRefusedError",
    "NoteSubmission",
    "admin_test_note_key",
    "describe",
    "note_outcome",
    "note_state",
    "retry",
    "submit_note",
]

#: The largest PDF ehrsync stores (decoded), a generic server's limit too; text notes are bounded by the request
#: model. A larger one is told the vendor's refusal first where its vendor would refuse it (``_refuse_large_pdf``).
MAX_PDF_BYTES = 5_000_000
#: The most source resources one note may name (DWB-83); duplicates are dropped, order kept.
MAX_SOURCES = 100


class NoteConflictError(ServiceError, codes=("idempotency_conflict",)):
    """The idempotency key already named a different note: the host app reused a key."""


class NoteNotAcceptedError(ServiceError, codes=("note_not_accepted",)):
    """The connection's EHR would refuse this note as submitted (its vendor's write profile, DWB-70): the write-back
    run would block it unsent. Told at submission, with the ``reasonCode`` and words the run would store; ``field``
    is the request's field to change."""

    def __init__(self, exc: WriteNotSupportedError, *, field: str, vendor: str) -> None:
        super().__init__(str(exc), reason=exc.reason, reasonCode=exc.reason_code, field=field, vendor=vendor)


class NoteRetryRefusedError(
    ServiceError, codes=("note_not_retryable", "note_duplicated_in_ehr", "confirm_not_in_ehr_required")
):
    """A person's retry refused (DWB-63, ``store.outbox_retry``): ``state`` and ``reasonCode`` are the note's."""

    def __init__(self, exc: RetryRefusedError) -> None:
        super().__init__(str(exc), code=exc.code, state=exc.state, reasonCode=exc.reason_code)


#: The request field each profile reason asks to change (the rest are about the content: ``text``/``pdfBase64``).
_REASON_FIELDS = {
    "vendor_disabled": "connectionId",  # a vendor with no FHIR note write: no note through this connection
    "draft_status_unsupported": "docStatus",
    "doc_status_unsupported": "docStatus",
    "encounter_required": "encounter",
    "author_not_signed_in_user": "author",
}


@dataclass(frozen=True)
class NoteSubmission:
    """A note as the host app sent it (already shape-checked by the route's model)."""

    connection_id: str
    idempotency_key: str
    title: str
    produced_by: str
    patient: str | None = None
    encounter: str | None = None
    author: str | None = None
    text: str | None = None
    pdf_base64: str | None = None
    note_type: str = "11506-3"
    doc_status: str = "preliminary"
    clinician_approved: bool = False
    prompt_version: str | None = None
    source_resources: tuple[str, ...] | None = None

    def __repr__(self) -> str:  # the text and the PDF are PHI
        return f"NoteSubmission(connection_id={self.connection_id!r}, idempotency_key={self.idempotency_key!r})"


def _content(sub: NoteSubmission) -> tuple[str, str, int]:
    """(stored body, content type, bytes): exactly one of text or PDF, the PDF base64 and bounded (its base64 told
    apart and measured by ``_refuse_large_pdf`` first, which ``submit_note`` runs for every PDF-only note)."""
    if (sub.text is None) == (sub.pdf_base64 is None):
        raise InvalidInputError("give exactly one of 'text' or 'pdfBase64'", field="text")
    if sub.text is not None:
        if not sub.text.strip():
            raise InvalidInputError("'text' is empty", field="text")
        return sub.text, "text/plain; charset=utf-8", len(sub.text.encode("utf-8"))
    try:
        raw = base64.b64decode(sub.pdf_base64 or "", validate=True)
    except binascii.Error:
        raise InvalidInputError("'pdfBase64' is not valid base64", field="pdfBase64") from None
    if not raw.startswith(b"%PDF-"):
        raise InvalidInputError("'pdfBase64' is not a PDF (no %PDF- header)", field="pdfBase64")
    return base64.b64encode(raw).decode("ascii"), PDF, len(raw)


def _refuse_large_pdf(conn: Connection, sub: NoteSubmission) -> None:
    """A PDF over ``MAX_PDF_BYTES``: the vendor's refusal where it would refuse it (its ``too_large`` with its own
    limit, or another reason, as the run would store), else ehrsync's own limit, by name and in bytes. Only base64
    is measured: a line break counted as data would make a PDF under every limit "too large"."""
    refuse_not_base64(sub.pdf_base64 or "")
    size = decoded_size(sub.pdf_base64 or "")
    if size <= MAX_PDF_BYTES:
        return
    _check_vendor(conn, sub, PDF, "", size)
    raise InvalidInputError(
        f"'pdfBase64' decodes to {size} bytes, over the {MAX_PDF_BYTES} bytes ehrsync takes for a PDF note",
        field="pdfBase64",
    )


def _patient(conn: Connection, requested: str | None) -> str:
    """A patient connection writes only about its own patient (DWB-12); backend connections must name one."""
    if conn.kind == ConnectionKind.PATIENT and conn.patient_id:
        if requested not in (None, conn.patient_id):
            raise InvalidInputError("'patient' is not this connection's patient", field="patient")
        return conn.patient_id
    if not requested:
        raise InvalidInputError("give 'patient' (this connection has no patient in context)", field="patient")
    return requested


def _check_vendor(conn: Connection, sub: NoteSubmission, content_type: str, body: str, size: int) -> None:
    """Refuse now a note the connection's vendor will certainly refuse: the write-back run's own profile checks on what
    cannot change after submission, the vendor's profile, the note and the connection's token (its persona; its
    user, where known, for the author). A vendor with no FHIR note write at all (``check_vendor_writes_notes``) is
    refused whatever the note: the run blocks it before any switch or the server's CapabilityStatement is read. The
    run checks again before sending, after the tenant's switches and the CapabilityStatement."""
    profile = plugin_write_profile(conn.provider_id)
    if profile is None:
        return
    try:
        check_vendor_writes_notes(profile.supported)
        check_against_profile(
            profile,
            persona=persona_of(conn.kind, conn.fhir_user),
            content_type=content_type,
            body=body,
            body_bytes=size,
            doc_status=sub.doc_status,
            encounter_id=sub.encounter,
            author_id=sub.author if conn.fhir_user else None,
            token_user=conn.fhir_user,
            fhir_base=conn.fhir_base,
        )
    except WriteNotSupportedError as exc:
        content_field = "text" if sub.text is not None else "pdfBase64"
        field = _REASON_FIELDS.get(exc.reason, content_field)
        raise NoteNotAcceptedError(exc, field=field, vendor=conn.provider_id) from None


def submit_note(ctx: ServiceContext, tenant_id: str, sub: NoteSubmission, actor: str) -> tuple[dict[str, Any], bool]:
    """Store the note ``pending`` (True) or return the note its key already made (False)."""
    conn = get_connection(ctx, tenant_id, sub.connection_id)  # another tenant's is simply not found
    if conn.status == ConnectionStatus.DISCONNECTED:
        raise ConnectionUnusableError(conn.status)
    if sub.note_type not in NOTE_TYPES:
        raise InvalidInputError(f"'noteType' must be one of {sorted(NOTE_TYPES)}", field="noteType")
    if sub.doc_status == "final" and not sub.clinician_approved:
        raise InvalidInputError("a 'final' note needs 'clinicianApproved': true", field="docStatus")
    if sub.pdf_base64 is not None and sub.text is None:  # both: ``_content`` says to give one
        _refuse_large_pdf(conn, sub)
    body, content_type, size = _content(sub)
    note = NoteInput(
        tenant_id=tenant_id,
        connection_id=conn.id,
        idempotency_key=sub.idempotency_key,
        patient_id=_patient(conn, sub.patient),
        title=sub.title.strip(),
        content_type=content_type,
        body=body,
        body_bytes=size,
        produced_by=sub.produced_by.strip(),
        loinc_code=sub.note_type,
        encounter_id=sub.encounter,
        author_id=sub.author,
        doc_status=sub.doc_status,
        clinician_approved=sub.clinician_approved,
        prompt_version=sub.prompt_version,
        source_resources=tuple(dict.fromkeys(sub.source_resources)) if sub.source_resources else None,
    )
    try:
        # the vendor check admits a new note only: a replay answers the stored note, as its key promised
        record, created = enqueue_note(
            ctx.db, note, actor=actor, admit=lambda: _check_vendor(conn, sub, content_type, body, size)
        )
    except IdempotencyConflictError as exc:
        raise NoteConflictError(str(exc), idempotencyKey=sub.idempotency_key) from None
    except UnknownConnectionError:  # deleted since it was looked up above
        raise NotFoundError("no such connection for this tenant", code="not_connected") from None
    return describe(record), created


def _note(ctx: ServiceContext, tenant_id: str, note_id: str) -> NoteRecord:
    record = get_note(ctx.db, note_id, tenant_id)
    if record is None:
        raise NotFoundError("no such note for this tenant")
    return record


def note_state(ctx: ServiceContext, tenant_id: str, note_id: str) -> dict[str, Any]:
    return describe(_note(ctx, tenant_id, note_id))


def retry(
    ctx: ServiceContext, tenant_id: str, note_id: str, actor: str, *, confirm: bool, requested_by: str | None
) -> dict[str, Any]:
    """A person's retry of a ``failed``/``blocked``/``unknown`` note (DWB-63): ``pending`` again, due now; its
    write-back run is the sensor's, as for any pending note (``store.outbox_retry`` says what is refused and why)."""
    try:
        record = retry_note(
            ctx.db, note_id, tenant_id, actor=actor, confirm_not_in_ehr=confirm, requested_by=requested_by
        )
    except RetryRefusedError as exc:
        raise NoteRetryRefusedError(exc) from None
    if record is None:
        raise NotFoundError("no such note for this tenant")
    return describe(record)


def note_outcome(ctx: ServiceContext, tenant_id: str, note_id: str) -> dict[str, Any]:
    """What the EHR said refusing the note, its ``diagnostics`` included (``store.models.NoteOutbox.outcome_issues``):
    PHI like the note's text, so answered only here, for the person who fixes this one note, never in ``describe``
    (polled by host apps, which may log it)."""
    record = _note(ctx, tenant_id, note_id)
    kept = record.outcome_issues or {}
    return {
        "noteId": record.id,
        "state": record.state,
        "reasonCode": record.reason_code,
        "lastHttpStatus": record.last_http_status,
        "issues": list(kept.get("issues") or []),
        "omittedIssues": int(kept.get("omitted") or 0),
    }


def describe(record: NoteRecord) -> dict[str, Any]:
    """The API's view of a note: state and ids, never its text, title or the EHR's diagnostics (``note_outcome``)."""
    return {
        "noteId": record.id,
        "connectionId": record.connection_id,
        "idempotencyKey": record.idempotency_key,
        "state": record.state,
        "version": record.version,
        "attempts": record.attempts,
        "docStatus": record.doc_status,
        "identifier": {"system": identifier_system(record.tenant_id), "value": record.draft_id},
        "reasonCode": record.reason_code,
        "reason": record.reason,
        "outcomeIssues": len((record.outcome_issues or {}).get("issues") or []),  # read at .../outcome
        "lastHttpStatus": record.last_http_status,
        "ehrResourceId": record.ehr_resource_id,
        "ehrVersionId": record.ehr_version_id,
        "provenance": {  # DWB-83: ehrsync's own record, whatever the EHR accepted
            "producedBy": record.produced_by,
            "promptVersion": record.prompt_version,
            "sourceResources": list(record.source_resources or []),
            "reviewer": record.author_id,
            "ehrProvenanceId": record.provenance_id,
        },
        "ehrProvenance": ehr_provenance(record),  # DWB-82: sent, owed (tries, next), given up, not allowed, ...
        "createdAt": record.created_at.isoformat(),
        "updatedAt": record.updated_at.isoformat(),
    }


def admin_test_note_key(connection_id: str, patient: str, text: str) -> str:
    """The admin test endpoint's idempotency key: the same test note twice is one note."""
    digest = hashlib.sha256(f"{connection_id}\n{patient}\n{text}".encode()).hexdigest()[:40]
    return f"admin-test-note:{digest}"
