"""The admin "test connection" check: discovery, then a Patient read through an existing connection."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from auth_service.services.audit import audit_event
from auth_service.services.connections import test_patient_read
from auth_service.services.context import ServiceContext
from auth_service.services.errors import EhrCallError, service_error_from
from auth_service.services.launch import check_allowlisted
from auth_service.services.profiles import resolve_profile
from connectors import errors as ce
from connectors.smart import discover
from store.models import Connection, ConnectionStatus

__all__ = ["test_provider"]


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
    unavailable = [step for step in _STEPS if result[step].get("error") == "ehr_unavailable"]
    if unavailable:  # the documented answer for an EHR that is down, with each step's result alongside
        message = result[unavailable[0]]["message"]
        raise EhrCallError(f"the EHR is unavailable ({unavailable[0]}): {message}", code="ehr_unavailable", **result)
    return result


_STEPS = ("discovery", "patient_read")


def _failed(exc: ce.EhrSyncError) -> dict[str, Any]:
    """A failed step reports the documented API code (docs/TROUBLESHOOTING.md), not the connector's class code."""
    failure = service_error_from(exc)
    return {"ok": False, "error": failure.code, "message": failure.message}


def _step_codes(result: dict[str, Any]) -> dict[str, str]:
    return {f"{step}_error": str(result[step]["error"]) for step in _STEPS if not result[step].get("ok")}
