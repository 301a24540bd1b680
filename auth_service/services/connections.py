"""What admins and patients do with an existing connection: status, refresh, disconnect; creating a backend one.

The admin's test calls through a connection (test read, test note) are in ``connectivity``."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from auth_service.services.audit import audit_event
from auth_service.services.context import ServiceContext
from auth_service.services.errors import (
    ClientGrantRefusedError,
    InvalidInputError,
    NotFoundError,
    ProviderUnusableError,
    service_error_from,
)
from auth_service.services.grants import keep_connection
from auth_service.services.launch import check_allowlisted
from auth_service.services.profiles import ClientProfile, check_provider_enabled, resolve_profile
from auth_service.services.providers_port import (
    check_connection_kind,
    plugin_display_name,
    plugin_group_export_only,
    plugin_wildcard_scopes,
)
from connectors import errors as ce
from connectors.smart import (
    ClientAuth,
    JwtClientAuth,
    SmartConfiguration,
    TokenResponse,
    check_auth_method_supported,
    client_credentials_grant,
    discover,
    filtered_scopes,
    scope_for_server,
)
from engine.connection_snapshots import NO_PATIENT, lacks_patient
from store.models import Connection, ConnectionKind, ConnectionStatus
from store.vault import reactivatable

__all__ = [
    "connection_status",
    "create_backend_connection",
    "disconnect",
    "get_connection",
    "latest_connection",
    "refresh",
]

logger = logging.getLogger(__name__)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def get_connection(ctx: ServiceContext, tenant_id: str, connection_id: str) -> Connection:
    """The connection if it belongs to ``tenant_id``; other tenants' connections are simply not found."""
    with ctx.db.session() as session:
        conn = session.get(Connection, connection_id)
        if conn is None or conn.tenant_id != tenant_id:
            raise NotFoundError("no such connection for this tenant", code="not_connected")
        session.expunge(conn)
        return conn


def latest_connection(ctx: ServiceContext, tenant_id: str, connection_id: str | None) -> Connection:
    """An explicit connection, or the tenant's most recently authorized one not disconnected (a re-authorization
    that took an older connection over counts as of its time)."""
    if connection_id:
        return get_connection(ctx, tenant_id, connection_id)
    with ctx.db.session() as session:
        conn = session.scalar(
            select(Connection)
            .where(Connection.tenant_id == tenant_id, Connection.status != ConnectionStatus.DISCONNECTED)
            .order_by(func.coalesce(Connection.reauthorized_at, Connection.created_at).desc())
            .limit(1)
        )
        if conn is None:
            raise NotFoundError("this tenant has no connection yet", code="not_connected")
        session.expunge(conn)
        return conn


def connection_status(ctx: ServiceContext, conn: Connection) -> dict[str, Any]:
    info = ctx.vault.token_info(conn.id)
    return {
        "connection_id": conn.id,
        "provider": conn.provider_id,
        "kind": conn.kind,
        "status": conn.status,
        "fhir_base": conn.fhir_base,
        "patient": conn.patient_id,
        "encounter": conn.encounter_id,
        "fhir_user": conn.fhir_user,
        "granted_scopes": conn.granted_scopes,
        "smart_v1": conn.smart_v1,
        "created_at": _iso(conn.created_at),
        # when a patient's new authorization last took this connection over (reconnected; None: never)
        "reauthorized_at": _iso(conn.reauthorized_at),
        "last_sync_at": _iso(conn.last_sync_at),
        # never synced by design (SAL-15: a clinician's sign-in with no patient in context; its notes still go out)
        "sync_blocked": NO_PATIENT if lacks_patient(conn.kind, conn.patient_id) else None,
        "token": None
        if info is None
        else {
            "expires_at": _iso(info.expires_at),
            "issued_at": _iso(info.issued_at),
            "has_refresh_token": info.has_refresh_token,
            "scope": info.scope,
        },
    }


def _audit(ctx: ServiceContext, conn: Connection, action: str, actor: str, outcome: str, **detail: Any) -> None:
    audit_event(ctx, action, outcome, conn.tenant_id, actor, connection_id=conn.id, detail=detail)


def refresh(ctx: ServiceContext, conn: Connection, actor: str) -> dict[str, Any]:
    """Force a refresh (or a new client_credentials mint for backend connections) and report the new expiry.

    A connection stopped by the EHR refusing its client is retried (``store.vault.reactivatable``): a
    ``client_rejected`` or ``token_undecryptable`` backend connection (or one an earlier version left ``needs_reauth``)
    mints again, a ``client_rejected`` patient connection refreshes with its stored refresh token; either becomes
    active again only if that works. A refresh not made (the EHR or its call budget busy, no refresh token) is an
    error naming why and until when the kept token is valid, never a 200 with the old expiry. The token calls spend
    the vendor's shared call budget (eCW). A provider disabled for the tenant is refused first (``provider_disabled``,
    nothing spent or sent, the connection's state unchanged)."""
    retry = reactivatable(conn.kind, conn.status)
    try:
        with ctx.db.session() as session:  # a disabled provider: refused before any budget or request (409)
            check_provider_enabled(session, conn.tenant_id, conn.provider_id)
        with ctx.call_budget(conn.provider_id, conn.fhir_base):
            if retry:  # the admin fixed the registration, credentials or keys: active only if the grant works
                ctx.vault.reactivate(conn.id)
            else:
                ctx.vault.force_refresh(conn.id, keep_valid=False)
    except ce.EhrSyncError as exc:
        _audit(ctx, conn, "token.refresh", actor, "failure", error_code=service_error_from(exc).code)
        raise
    info = ctx.vault.token_info(conn.id)
    _audit(ctx, conn, "token.refresh", actor, "success")
    return {"connection_id": conn.id, "expires_at": _iso(info.expires_at) if info else None}


def disconnect(ctx: ServiceContext, conn: Connection, actor: str) -> dict[str, Any]:
    """Revoke at the server (refresh then access token, SAL-34) within the vendor's shared call budget (eCW), then
    delete the tokens.

    The tokens are deleted whatever became of the revocation (the person asked to disconnect): an EHR down, throttling
    or refusing, and a call budget with no free call (nothing sent, never a revocation outside it), alike. Such a
    disconnect is never silent: ``revoked_at_server`` false, ``revocation`` says why, ``revocation_error`` the
    documented code, ``warning`` in plain words that the tokens stay valid at the EHR until they expire; the audit
    row ``connection.disconnect`` (outcome ``local_only``) says the same."""
    with ctx.call_budget(conn.provider_id, conn.fhir_base):  # eCW counts discovery and revocation calls too
        revocation = ctx.vault.disconnect(conn.id)
    answer: dict[str, Any] = {
        "connection_id": conn.id,
        "status": ConnectionStatus.DISCONNECTED,
        "revoked_at_server": revocation.revoked,
        "revocation": revocation.outcome,
    }
    detail: dict[str, Any] = {"revoked_at_server": revocation.revoked, "revocation": revocation.outcome}
    if revocation.error is not None:
        answer["revocation_error"] = detail["error_code"] = service_error_from(revocation.error).code
    if revocation.confirmed:
        detail["confirmed"] = list(revocation.confirmed)
    if not revocation.revoked:
        answer["warning"] = revocation.describe()
    outcome = "success" if revocation.revoked or revocation.outcome == "no_tokens" else "local_only"
    _audit(ctx, conn, "connection.disconnect", actor, outcome, **detail)
    return answer


def _backend_profile(ctx: ServiceContext, tenant_id: str, provider_id: str) -> tuple[ClientProfile, ClientAuth]:
    """The tenant's configuration of ``provider_id`` for backend services and its client authentication, or the
    ServiceError saying what is missing or wrong (not configured, disabled, incomplete, not a backend app, an issuer
    off the allowlist); nothing is sent to the EHR."""
    with ctx.db.session() as session:
        profile = resolve_profile(session, ctx.cipher, ctx.settings, tenant_id, provider_id)
    profile.check_settings()  # scopes never asked on a guess at a tenant switch
    if profile.auth_method not in ("private_key_jwt", "client_secret_basic"):
        raise ProviderUnusableError(
            "backend services need private_key_jwt or client_secret_basic", code="configuration_error"
        )
    check_connection_kind(provider_id, profile.config, backend=True)  # e.g. PointClickCare: a bulk app only
    client_auth = profile.client_auth(ctx.settings, "client_credentials")
    check_allowlisted(ctx, profile.fhir_base)
    return profile, client_auth


def _refuse_wildcards(provider_id: str, scope: str, given: str | None = None) -> None:
    """InvalidInputError naming the wildcard scopes of ``scope`` (as the EHR would be asked them, ``given`` the
    admin's spelling when it differs) where the vendor takes none (Oracle Health, vendors.md §3)."""
    if wildcards := plugin_wildcard_scopes(provider_id, scope):
        spelt = f" (this EHR takes SMART v1 scopes only: {given!r} would be asked as {scope!r})" if given else ""
        raise InvalidInputError(
            f"{plugin_display_name(provider_id)} takes no wildcard scopes ({', '.join(wildcards)}){spelt}: list "
            "each resource type and its permissions, e.g. system/Patient.read system/Observation.read",
            field="scope",
        )


def _mint_backend_token(
    ctx: ServiceContext, profile: ClientProfile, client_auth: ClientAuth, scope: str
) -> tuple[SmartConfiguration, TokenResponse, str]:
    """The first client_credentials token, and the scope it asked for, once discovery shows the server advertises the
    client's auth method and alg (SAL-05; ConfigurationError otherwise): in v1 spelling for a v1-only server
    (SAL-20/32: ``system/*.rs`` is ``system/*.read`` there, which knows no other). A granular scope is refused there:
    v1 has no filters, and the whole type is wider than the admin asked; a scope that becomes a wildcard there
    (``.cruds`` is ``.*``) is refused where the vendor takes none."""
    with ctx.call_budget(profile.provider_id, profile.fhir_base):  # eCW counts these calls too
        cfg = discover(profile.fhir_base, http=ctx.http, cache=ctx.discovery)
        # SAL-05: the method and the alg the client really signs with, advertised, or refused here at setup
        alg = client_auth.alg if isinstance(client_auth, JwtClientAuth) else None
        check_auth_method_supported(cfg, client_auth.method, alg)
        if cfg.v1_scopes_only and (granular := filtered_scopes(scope)):
            raise InvalidInputError(
                f"this EHR takes SMART v1 scopes only, which have no filters: {', '.join(granular)} would be asked"
                f" as {scope_for_server(' '.join(granular), True)}, every resource of the type, wider than asked;"
                " ask for that scope explicitly if it is meant",
                field="scope",
            )
        asked = scope_for_server(scope, cfg.v1_scopes_only)
        if asked != scope:  # a v1-only EHR is asked system/X.cruds as system/X.*, a wildcard where none is taken
            _refuse_wildcards(profile.provider_id, asked, given=scope)
        scope = asked
        try:
            token = client_credentials_grant(cfg.token_endpoint, http=ctx.http, client_auth=client_auth, scope=scope)
        except ce.OAuthError as exc:
            if not ce.is_refusal(exc):  # the EHR failing or throttling: 502/503 as any EHR outage
                raise
            raise ClientGrantRefusedError(exc, _registration_checks(ctx, profile, scope)) from None
    return cfg, token, scope


def _registration_checks(ctx: ServiceContext, profile: ClientProfile, scope: str) -> str:
    """What the operator checks in the EHR's app registration after a refusal; names no secret."""
    if profile.auth_method == "client_secret_basic":
        key = "its client secret"
    else:
        jwks = f"{ctx.settings.APP_BASE_URL}/api/integrations/ehr/jwks"
        key = f"the JWKS URL registered for it (this service publishes {jwks}) and the key id it signs with"
    return (
        f"Check the app registration at the EHR: client id {profile.client_id!r}, {key}, that it may use the "
        f"client_credentials grant, and that its system/ scopes allow {scope!r}."
    )


def create_backend_connection(
    ctx: ServiceContext, tenant_id: str, provider_id: str, scope: str, actor: str, group_id: str | None = None
) -> dict[str, Any]:
    """SMART Backend Services (SAL-32): mint a client_credentials token now and keep minting before expiry.

    A vendor that exports only at Group level needs ``group_id``: refused before any EHR call (BDX-01), but after
    the tenant's configuration of the provider is checked, so an admin learns the root cause (the provider not
    configured, disabled or incomplete) first, not a group id that would only lead to it."""
    try:
        profile, client_auth = _backend_profile(ctx, tenant_id, provider_id)
        if not group_id and plugin_group_export_only(provider_id):
            raise InvalidInputError(
                f"give 'group_id': {plugin_display_name(provider_id)} exports Bulk data only at Group level "
                "(Group/{id}/$export), so a backend connection without a group could never export"
            )
        _refuse_wildcards(provider_id, scope)
        cfg, token, asked = _mint_backend_token(ctx, profile, client_auth, scope)
    except ce.EhrSyncError as exc:
        failure = service_error_from(exc)
        detail = {"provider": provider_id, "asked_scope": scope, "error_code": failure.code}
        if "ehr_error" in failure.details:  # the EHR's own OAuth code of a refusal
            detail["ehr_error"] = failure.details["ehr_error"]
        audit_event(ctx, "backend.create", "failure", tenant_id, actor, detail=detail)
        raise failure from None
    granted = token.scope or asked
    connection_id = keep_connection(
        ctx,
        profile,
        cfg,
        token,
        action="backend.create",
        actor=actor,
        detail={"granted_scope": granted, "asked_scope": asked},
        kind=ConnectionKind.GROUP if group_id else ConnectionKind.BACKEND,
        group_id=group_id,
        granted_scopes=granted,
    ).connection_id
    stored = ctx.vault.token_info(connection_id)  # the expiry refreshes go by (capped at the vendor's, SAL-23)
    expires_at = stored.expires_at if stored is not None else token.expires_at
    return {"connection_id": connection_id, "granted_scopes": granted, "expires_at": _iso(expires_at)}
