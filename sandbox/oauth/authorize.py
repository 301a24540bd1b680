"""``/oauth/authorize``: validate the request, then consent page, pre-approval or auto-approval."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from urllib.parse import urlencode

from sandbox.config import SandboxConfig
from sandbox.data.ids import patient_id
from sandbox.oauth.grants import subset
from sandbox.oauth.scopes import Grant, ScopeError, narrow, v2_syntax_error
from sandbox.oauth.state import AuthState, CodeGrant, Context, PendingAuthorization

log = logging.getLogger(__name__)
PENDING_TTL_S = 600


class ErrorPage(Exception):
    """The request cannot be answered by redirect (unknown client / redirect_uri): show a page."""


class RedirectError(Exception):
    """An OAuth error to deliver to the (validated) redirect_uri."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def redirect_url(redirect_uri: str, params: Mapping[str, str | None]) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return redirect_uri + ("&" if "?" in redirect_uri else "?") + query


def validate_client(auth: AuthState, params: Mapping[str, str]) -> tuple[str, str]:
    client = auth.clients.get(params.get("client_id", ""))
    if client is None:
        raise ErrorPage("Unknown client_id.")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:
        raise ErrorPage("redirect_uri is not registered for this client.")
    return client.client_id, redirect_uri


def build_pending(
    auth: AuthState, cfg: SandboxConfig, params: Mapping[str, str], fhir_base: str, now: float
) -> PendingAuthorization:
    """Check everything after client and redirect are trusted; errors become RedirectError."""
    client_id, redirect_uri = validate_client(auth, params)
    if params.get("response_type") != "code":
        raise RedirectError("unsupported_response_type", "response_type must be code")
    if params.get("aud") != fhir_base:
        raise RedirectError("invalid_request", "aud must equal the FHIR base URL exactly")
    if not params.get("code_challenge"):
        raise RedirectError("invalid_request", "PKCE code_challenge is required")
    if params.get("code_challenge_method") != "S256":
        raise RedirectError("invalid_request", "code_challenge_method must be S256")
    try:
        grant = Grant.parse(params.get("scope", ""))
    except ScopeError as exc:
        raise RedirectError("invalid_scope", str(exc)) from None
    if cfg.profile != "v2" and (refused := v2_syntax_error(grant)):
        raise RedirectError("invalid_scope", refused)
    client = auth.clients[client_id]
    if client.allowed_scopes:
        grant = narrow(grant, Grant.parse(client.allowed_scopes))
    grant = subset(grant, cfg.grant_scope_subset)
    if not grant.tokens:
        raise RedirectError("invalid_scope", "no requested scope can be granted")
    ctx = Context()
    launch = params.get("launch")
    if launch:
        with auth.lock:
            found = auth.launches.pop(launch, None)
        if found is None:
            raise RedirectError("invalid_request", "unknown or already used launch")
        ctx = Context(found.patient, found.encounter)
    wants_patient = grant.has("launch/patient") or any(r.context == "patient" for r in grant.resources)
    return PendingAuthorization(
        client_id=client_id,
        redirect_uri=redirect_uri,
        scope=grant.text,
        state=params.get("state"),
        code_challenge=params["code_challenge"],
        nonce=params.get("nonce"),
        context=ctx,
        needs_patient=wants_patient and ctx.patient is None,
        expires_at=now + PENDING_TTL_S,
    )


def issue_code(
    auth: AuthState,
    pending: PendingAuthorization,
    patient: str | None,
    cfg: SandboxConfig,
    fhir_base: str,
    now: float,
    scope: str | None = None,
) -> str:
    """Finish an approved authorization: bind context, store a single-use code, return the redirect URL."""
    grant = Grant.parse(scope if scope is not None else pending.scope)
    # A patient is bound only when the request needs one (launch/patient or patient/ scopes) or the launch had one.
    ctx = Context(pending.context.patient or (patient if pending.needs_patient else None), pending.context.encounter)
    if any(r.context == "user" for r in grant.resources):
        ctx.fhir_user = f"{fhir_base}/Practitioner/prac0"
    elif ctx.patient:
        ctx.fhir_user = f"{fhir_base}/Patient/{ctx.patient}"
    code = secrets.token_urlsafe(32)
    record = CodeGrant(
        client_id=pending.client_id,
        redirect_uri=pending.redirect_uri,
        code_challenge=pending.code_challenge,
        scope=grant.text,
        nonce=pending.nonce,
        context=ctx,
        expires_at=now + cfg.code_lifetime_s,
    )
    with auth.lock:
        auth.codes[code] = record
    log.info("authorization code issued for client %s", pending.client_id)
    return redirect_url(pending.redirect_uri, {"code": code, "state": pending.state})


def auto_decision(auth: AuthState, cfg: SandboxConfig, pending: PendingAuthorization) -> tuple[str, str | None] | None:
    """``(patient, scope override)`` when pre-approval or auto_approve skips the consent page."""
    with auth.lock:
        pre = auth.preapprovals.pop(pending.client_id, None)
    if pre is not None:
        patient, scopes = pre
        scope = None
        if scopes:
            scope = narrow(Grant.parse(pending.scope), Grant.parse(scopes)).text or pending.scope
        return patient, scope
    if cfg.auto_approve:
        return pending.context.patient or patient_id(0), None
    return None
