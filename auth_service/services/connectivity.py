"""The admin's test calls to the EHR: the provider "test connection" check (discovery, then a Patient read through an
existing connection), the test read of one Patient, and the test note's write gate (its CapabilityStatement read).

Every request they send spends the vendor's shared call budget (eCW: every caller and the token endpoint counted) as
the launch, the code exchange, the backend mint and the admin's refresh do: with no free call within
``EHR_CALL_BUDGET_WAIT_SECONDS`` nothing is sent and the answer is ``503 ehr_unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import select

from auth_service.services.audit import audit_event
from auth_service.services.context import ServiceContext
from auth_service.services.errors import (
    ConnectionUnusableError,
    EhrCallError,
    InvalidInputError,
    NotFoundError,
    service_error_from,
)
from auth_service.services.interactive import INTERACTIVE_TIMEOUT, interactive_retry
from auth_service.services.launch import check_allowlisted
from auth_service.services.notes import NoteSubmission, admin_test_note_key, submit_note
from auth_service.services.profiles import resolve_profile
from auth_service.services.tenants import get_practice_settings
from connectors import errors as ce
from connectors.fhir import FhirClient
from connectors.smart import discover
from connectors.writeback import WriteFlags, check_note_write
from store import check_usable
from store.models import Connection, ConnectionKind, ConnectionStatus, Tenant

__all__ = ["flags_all_on", "test_note", "test_patient_read", "test_provider"]


def test_provider(ctx: ServiceContext, tenant_id: str, provider_id: str, actor: str) -> dict[str, Any]:
    """Each step reports ok/error with the error code; a failing step does not hide the others' results."""
    with ctx.db.session() as session:
        profile = resolve_profile(session, ctx.cipher, ctx.settings, tenant_id, provider_id)
        conn = session.scalar(
            select(Connection)
            .where(
                Connection.tenant_id == tenant_id,
                Connection.provider_id == provider_id,
                Connection.status == ConnectionStatus.ACTIVE,
            )
            .order_by(Connection.created_at.desc())
            .limit(1)
        )
        if conn is not None:
            session.expunge(conn)
    result: dict[str, Any] = {"provider": provider_id, "fhir_base": profile.fhir_base}
    try:
        check_allowlisted(ctx, profile.fhir_base)
        with ctx.call_budget(profile.provider_id, profile.fhir_base):  # eCW counts discovery too
            cfg = discover(profile.fhir_base, http=ctx.http, cache=ctx.discovery)
        result["discovery"] = {"ok": True, "smart_v1": cfg.smart_v1, "capabilities": list(cfg.capabilities)}
    except ce.EhrSyncError as exc:  # the allow-list refusal too is reported, not raised, in a diagnostic
        result["discovery"] = _failed(exc)
    if conn is None:
        result["patient_read"] = {"ok": False, "error": "not_connected", "message": "no active connection yet"}
    else:
        try:
            read = test_patient_read(ctx, conn, actor, None)
            result["patient_read"] = {"ok": True, "connection_id": conn.id, "id": read["id"]}
        except ce.EhrSyncError as exc:
            result["patient_read"] = _failed(exc)
    ok = result["discovery"]["ok"] and result["patient_read"]["ok"]
    detail = {"provider": provider_id, **_step_codes(result)}
    audit_event(ctx, "provider.test", "success" if ok else "failure", tenant_id, actor, detail=detail)
    result["ok"] = ok
    _raise_if_unavailable(result)
    return result


_STEPS = ("discovery", "patient_read")


def _raise_if_unavailable(result: dict[str, Any]) -> None:
    """The documented answer for an EHR that is down (or its call budget busy), each step's result alongside; the
    longest ``retryAfterSeconds`` a step was told becomes the answer's (and its ``Retry-After``)."""
    unavailable = [step for step in _STEPS if result[step].get("error") == "ehr_unavailable"]
    if not unavailable:
        return
    message = result[unavailable[0]]["message"]
    waits = [result[step]["retryAfterSeconds"] for step in unavailable if "retryAfterSeconds" in result[step]]
    extra = {"retryAfterSeconds": max(waits)} if waits else {}
    raise EhrCallError(
        f"the EHR is unavailable ({unavailable[0]}): {message}", code="ehr_unavailable", **result, **extra
    )


def _failed(exc: ce.EhrSyncError) -> dict[str, Any]:
    """A failed step reports the documented API code (docs/TROUBLESHOOTING.md), not the connector's class code, and
    when to ask again if the EHR (or its call budget) said so."""
    failure = service_error_from(exc)
    step: dict[str, Any] = {"ok": False, "error": failure.code, "message": failure.message}
    if "retryAfterSeconds" in failure.details:
        step["retryAfterSeconds"] = failure.details["retryAfterSeconds"]
    return step


def _step_codes(result: dict[str, Any]) -> dict[str, str]:
    return {f"{step}_error": str(result[step]["error"]) for step in _STEPS if not result[step].get("ok")}


def _audit(ctx: ServiceContext, conn: Connection, action: str, actor: str, outcome: str, **detail: Any) -> None:
    audit_event(ctx, action, outcome, conn.tenant_id, actor, connection_id=conn.id, detail=detail)


def _fhir(ctx: ServiceContext, conn: Connection) -> FhirClient:
    """A FHIR client for a test call through ``conn``; send through it only within ``_budget``. A ``client_rejected``
    connection answers the store's explanation (why the EHR refused the client, or which connection of the same app
    it was refused on and when, and which admin call retries it), sending nothing to the EHR."""
    if conn.status == ConnectionStatus.CLIENT_REJECTED:
        with ctx.db.session() as session:
            check_usable(session, conn.id)  # raises ClientRejectedError, unless it was reactivated meanwhile
    # token_undecryptable goes on to the vault, which re-checks the stored token (active again once it opens)
    elif conn.status not in (ConnectionStatus.ACTIVE, ConnectionStatus.TOKEN_UNDECRYPTABLE):
        raise ConnectionUnusableError(conn.status)
    return FhirClient(
        conn.fhir_base,
        ctx.vault.token_source(conn.id),
        http=ctx.http,
        retry=interactive_retry(),
        timeout=INTERACTIVE_TIMEOUT,
    )


def _budget(ctx: ServiceContext, conn: Connection) -> AbstractContextManager[None]:
    """Every request sent in this block (FHIR and token calls) spends the vendor's shared call budget (eCW)."""
    return ctx.call_budget(conn.provider_id, conn.fhir_base)


def test_patient_read(ctx: ServiceContext, conn: Connection, actor: str, patient_id: str | None) -> dict[str, Any]:
    """Read one Patient to prove the connection works; answers ids only (no PHI in the response)."""
    target = patient_id or conn.patient_id
    if not target:
        raise InvalidInputError("give 'patient' (this connection has no patient in context)")
    client = _fhir(ctx, conn)
    try:
        with _budget(ctx, conn):  # eCW counts these calls too
            try:
                patient = client.read("Patient", target)
            except ce.FhirUnauthorizedError:
                if conn.kind == ConnectionKind.PATIENT:
                    raise
                ctx.vault.confirm_unauthorized(conn.id)  # a fresh client_credentials token refused: client_rejected
                raise
    except ce.EhrSyncError as exc:
        code = service_error_from(exc).code
        _audit(ctx, conn, "data.read", actor, "failure", resource="Patient", error_code=code)
        raise
    _audit(ctx, conn, "data.read", actor, "success", resource="Patient", resource_id=target)
    meta = patient.get("meta") if isinstance(patient.get("meta"), dict) else {}
    return {
        "connection_id": conn.id,
        "resourceType": "Patient",
        "id": patient.get("id"),
        "meta": {"versionId": meta.get("versionId"), "lastUpdated": meta.get("lastUpdated")} if meta else None,
    }


def test_note(ctx: ServiceContext, conn: Connection, actor: str, text: str, patient_id: str | None) -> dict[str, Any]:
    """Check the write gate now (409 ``WRITE_NOT_SUPPORTED`` when any gate is closed), then put a test draft in
    the outbox. The note is written by the Dagster write-back like any other (exactly once); the same test
    note (connection, patient, text) twice is one note, never two."""
    target = patient_id or conn.patient_id
    if not target:
        raise InvalidInputError("give 'patient' (this connection has no patient in context)")
    _check_write_gate(ctx, conn, actor)
    submission = NoteSubmission(
        connection_id=conn.id,
        idempotency_key=admin_test_note_key(conn.id, target, text),
        title="Test note",
        produced_by="ehrsync admin test",
        patient=target,
        text=text,
    )
    answer, created = submit_note(ctx, conn.tenant_id, submission, actor)
    return {"connection_id": conn.id, "note_id": answer["noteId"], "state": answer["state"], "created": created}


def _check_write_gate(ctx: ServiceContext, conn: Connection, actor: str) -> None:
    with ctx.db.session() as session:
        tenant = session.get(Tenant, conn.tenant_id)
        if tenant is None:
            raise NotFoundError("the connection's tenant no longer exists")
        practice = get_practice_settings(tenant)
        profile = resolve_profile(session, ctx.cipher, ctx.settings, conn.tenant_id, conn.provider_id)
    service, vendor = ctx.settings.SMART_ENABLE_WRITE, profile.vendor_allows_notes
    if service and vendor:  # the engine's rule: a switch neither true nor false is named where the answer hangs on it
        practice.switches_on("enableWrite", "enableNoteCreate")
    flags = WriteFlags(
        service_enabled=service,
        tenant_enabled=practice.said_true("enableWrite"),
        note_create_enabled=practice.said_true("enableNoteCreate"),
        vendor_allows_notes=vendor,
    )
    client = _fhir(ctx, conn)
    try:
        with _budget(ctx, conn):  # the CapabilityStatement read: eCW counts it too
            metadata = client.capabilities() if flags_all_on(flags) else {}
        check_note_write(metadata, conn.granted_scopes or "", flags)
    except ce.WriteNotSupportedError as exc:
        _audit(ctx, conn, "data.write", actor, "blocked", resource="DocumentReference", reason=exc.reason)
        raise service_error_from(exc, tenant=conn.tenant_id, vendor=conn.provider_id) from None


def flags_all_on(flags: WriteFlags) -> bool:
    """No metadata call when a flag already closes the gate (DWB-43 answers without touching the EHR)."""
    return flags.service_enabled and flags.tenant_enabled and flags.note_create_enabled and flags.vendor_allows_notes
