"""Draft-note API for host apps (issue 13): put a note in the write-back outbox, read its state.

Tenant-scoped like ``/api/ehr/sync``: the API key names the tenant, a connection of another tenant is not found.
``POST`` answers 201 for a new note and 200 for a replay of the same idempotency key (the same note); the same
key with a different note is 409 ``idempotency_conflict``; a note the connection's vendor will never take is 422
``note_not_accepted`` (a vendor with no FHIR note write: every note). The note is written to the EHR later, by Dagster.
``GET .../{id}`` answers its state (no PHI); ``GET .../{id}/outcome`` the EHR's words refusing it (PHI);
``POST .../{id}/retry`` is a person's retry of a note left ``failed``, ``blocked`` or ``unknown`` (DWB-63).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from auth_service.api.deps import AdminDep, CtxDep
from auth_service.services import notes

__all__ = ["router"]

router = APIRouter(tags=["notes"])
_ID = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-.]+$")
# DWB-83: a FHIR relative reference ("Encounter/1"); ids only, never text
_SOURCE = Annotated[str, Field(max_length=130, pattern=r"^[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}$")]


class NoteRequest(BaseModel):
    """One draft note; exactly one of ``text`` or ``pdfBase64``."""

    model_config = ConfigDict(extra="forbid")

    connectionId: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    idempotencyKey: Annotated[
        str, Field(min_length=8, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$", description="Chosen by the host app")
    ]
    patient: Annotated[str | None, _ID] = None
    encounter: Annotated[str | None, _ID] = None
    author: Annotated[str | None, _ID] = None  # the reviewing clinician's Practitioner id (DWB-16)
    title: Annotated[str, Field(min_length=1, max_length=200)]
    text: Annotated[str | None, Field(min_length=1, max_length=100_000)] = None
    # no max_length: the service measures a PDF over its limit (notes.MAX_PDF_BYTES) and names whose limit it
    # passes, the vendor's (422 note_not_accepted, too_large) or ehrsync's (400); the body is bounded by BodyLimit
    pdfBase64: Annotated[str | None, Field(min_length=8)] = None
    producedBy: Annotated[str, Field(min_length=1, max_length=200, description="The model or tool that drafted it")]
    noteType: Annotated[str, Field(pattern=r"^\d{4,5}-\d$", description="LOINC note type")] = "11506-3"
    docStatus: Literal["preliminary", "final"] = "preliminary"
    clinicianApproved: StrictBool = False  # JSON true/false: lax parsing took 1, "true" or "yes" as an approval
    promptVersion: Annotated[
        str | None, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:+-]+$", description="DWB-83")
    ] = None
    sourceResources: Annotated[
        list[_SOURCE] | None, Field(max_length=notes.MAX_SOURCES, description="DWB-83: resources the draft used")
    ] = None


@router.post("/api/ehr/notes", status_code=201)
def submit_note(admin: AdminDep, ctx: CtxDep, body: NoteRequest, response: Response) -> dict[str, Any]:
    """Store the note ``pending``; a replay of its idempotency key answers 200 with the same note.

    Errors: 400 ``invalid_request`` (``field`` names the bad one; a PDF over ehrsync's 5,000,000 bytes its vendor
    would otherwise take), 422 ``validation_error`` (``fields``), 409 ``idempotency_conflict``, 422
    ``note_not_accepted``: the connection's EHR will never take the note as sent (its vendor's write profile: no
    FHIR note write at all for athenahealth, eClinicalWorks and PointClickCare, ``field`` ``connectionId``; a PDF or
    no ``encounter`` for Epic, a draft for Oracle Health, another author than the signed-in clinician, over the
    vendor's size limit, named); ``reason``, ``reasonCode`` and ``message`` are what the write-back run would
    store, ``field`` the one to change; nothing is stored (checked for a new note only: a replayed key answers the
    note it stored)."""
    submission = notes.NoteSubmission(
        connection_id=body.connectionId,
        idempotency_key=body.idempotencyKey,
        title=body.title,
        produced_by=body.producedBy,
        patient=body.patient,
        encounter=body.encounter,
        author=body.author,
        text=body.text,
        pdf_base64=body.pdfBase64,
        note_type=body.noteType,
        doc_status=body.docStatus,
        clinician_approved=body.clinicianApproved,
        prompt_version=body.promptVersion,
        source_resources=tuple(body.sourceResources) if body.sourceResources is not None else None,
    )
    answer, created = notes.submit_note(ctx, admin.tenant_id, submission, admin.actor)
    if not created:
        response.status_code = 200
    return answer


@router.get("/api/ehr/notes/{note_id}")
def note_state(
    admin: AdminDep, ctx: CtxDep, note_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-f0-9]+$")]
) -> dict[str, Any]:
    """The note's state (``pending``, ``sending``, ``written``, ``failed``, ``blocked``, ``unknown``), no text."""
    return notes.note_state(ctx, admin.tenant_id, note_id)


class RetryRequest(BaseModel):
    """A person's retry (DWB-63). ``confirmNotInEhr``: they looked in the patient's chart and the note is not
    there (required when the EHR ignores the identifier search); ``requestedBy``: who asked, for the audit (an id,
    e.g. the clinician's Practitioner id or the host app's user id; never a patient's)."""

    model_config = ConfigDict(extra="forbid")

    confirmNotInEhr: StrictBool = False  # a person's explicit JSON true: never 1, "true" or "yes" from a form
    requestedBy: Annotated[str | None, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:@/-]+$")] = None

    @field_validator("requestedBy")
    @classmethod
    def _not_a_patient(cls, value: str | None) -> str | None:
        """The audit never holds PHI (DWB-62): a patient's reference (a patient app's ``fhirUser``) is refused."""
        if value is not None and "/Patient/" in f"/{value}":
            raise ValueError("requestedBy names a Patient, and the audit never holds a patient's id: leave it out")
        return value


@router.post("/api/ehr/notes/{note_id}/retry")
def retry_note(
    admin: AdminDep,
    ctx: CtxDep,
    note_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-f0-9]+$")],
    body: RetryRequest | None = None,
) -> dict[str, Any]:
    """Put a ``failed``, ``blocked`` or ``unknown`` note back to ``pending``, due now, with its full tries: the
    Dagster write-back sends it as any pending note (every gate again; a note that may be in the EHR only with
    ``If-None-Exist`` or after its identifier search). Answers the note (200), ``version`` bumped.

    Errors: 404 ``not_found`` (also another tenant's note); 409 ``note_not_retryable`` (``state`` names it:
    ``pending``, ``sending`` or ``written``, e.g. a second click; or ``unknown`` ``accepted``, which ehrsync still
    searches for by itself), 409 ``note_duplicated_in_ehr`` (``duplicate_notes``: a person removes the copies in
    the EHR; never sent again), 409 ``confirm_not_in_ehr_required`` (``identifier_search_ignored``: ehrsync cannot
    look, so the person must say ``confirmNotInEhr``)."""
    asked = body or RetryRequest()
    return notes.retry(
        ctx, admin.tenant_id, note_id, admin.actor, confirm=asked.confirmNotInEhr, requested_by=asked.requestedBy
    )


@router.get("/api/ehr/notes/{note_id}/outcome")
def note_outcome(
    admin: AdminDep, ctx: CtxDep, note_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-f0-9]+$")]
) -> dict[str, Any]:
    """What the EHR said refusing the note (DWB-51): each OperationOutcome issue's severity, code, expression,
    ``details.coding`` codes and ``diagnostics`` (the server's words: they may quote the patient and the note, so
    they are PHI; the request's token is removed). Kept while the note stays as refused; empty otherwise."""
    return notes.note_outcome(ctx, admin.tenant_id, note_id)
