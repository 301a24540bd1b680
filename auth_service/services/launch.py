"""SMART App Launch as a client: start (EHR launch or standalone) and finish (callback) an authorization.

Security order matters and is tested: the launch ``iss`` is checked against ``SMART_ISSUER_ALLOWLIST`` and
the tenant's configured issuer before any network call, and a launch two tenants could be is refused
(SAL-06, ``launch_target``); the callback consumes ``state`` before anything else (SAL-13); PKCE S256 always
(SAL-11); ``aud`` is the FHIR base exactly (SAL-10); the id_token's keys are fetched only from an allow-listed
issuer (SAL-41).
"""

from __future__ import annotations

import logging
import secrets

from auth_service.services.audit import audit_event
from auth_service.services.callback_errors import callback_error, sanitize_description
from auth_service.services.callback_replay import (
    CallbackLink,
    CallbackResult,
    failed_outcome,
    interrupted_error,
    record_outcome,
    replay_key,
)
from auth_service.services.context import ServiceContext
from auth_service.services.errors import (
    AuthorizationRefusedError,
    EhrCallError,
    InvalidInputError,
    IssuerRefusedError,
    ServiceError,
    StateRefusedError,
    service_error_from,
)
from auth_service.services.grant_checks import check_grant
from auth_service.services.grants import keep_connection
from auth_service.services.launch_target import check_allowlisted, find_launch_target
from auth_service.services.profiles import ClientProfile, resolve_profile
from auth_service.services.providers_port import check_connection_kind
from auth_service.services.unstored_tokens import revoke_issued
from connectors import errors as ce
from connectors.smart import (
    JwtClientAuth,
    SmartConfiguration,
    TokenResponse,
    build_authorize_url,
    check_auth_method_supported,
    discover,
    exchange_code,
    new_pkce,
    normalize_issuer,
    scope_for_server,
)
from store.models import ConnectionKind
from store.states import CallbackOutcome, ConsumedState, InvalidStateError

__all__ = [
    "CallbackResult",
    "begin_authorization",
    "check_allowlisted",
    "complete_authorization",
    "find_launch_target",
]

logger = logging.getLogger(__name__)


def _launch_scopes(scopes: str, ehr_launch: bool) -> str:
    """The launch scopes of the flow, whatever the profile lists: an EHR launch asks ``launch`` (the context comes
    with its ``launch`` parameter, SAL-06); a standalone one ``launch/patient`` and never ``launch``, an EHR-launch
    scope with no launch to go with it (SAL-07; a provider-facing app's defaults list ``launch``)."""
    words = scopes.split()
    if ehr_launch:
        words = [w for w in words if not w.startswith("launch/")]
        if "launch" not in words:
            words.insert(0, "launch")
    else:
        words = [w for w in words if w != "launch"]
        if not any(w.startswith("launch/") for w in words):
            words.insert(0, "launch/patient")
    return " ".join(dict.fromkeys(words))


def begin_authorization(
    ctx: ServiceContext,
    *,
    tenant_id: str,
    provider_id: str,
    browser_session: str,
    launch: str | None = None,
    user_ref: str | None = None,
    redirect_target: str | None = None,
) -> str:
    """Store a fresh state + PKCE verifier and return the EHR's authorize URL."""
    with ctx.db.session() as session:
        profile = resolve_profile(session, ctx.cipher, ctx.settings, tenant_id, provider_id)
    profile.check_settings()  # scopes never asked on a guess at a tenant switch
    check_connection_kind(provider_id, profile.config, backend=False)  # e.g. a PointClickCare bulk app signs in no one
    check_allowlisted(ctx, profile.fhir_base)
    with ctx.call_budget(profile.provider_id, profile.fhir_base):  # eCW counts discovery too
        cfg = discover(profile.fhir_base, http=ctx.http, cache=ctx.discovery)
    auth = profile.client_auth(ctx.settings, "authorization_code")  # the alg it really signs with (SAL-05)
    check_auth_method_supported(cfg, auth.method, auth.alg if isinstance(auth, JwtClientAuth) else None)
    scope = scope_for_server(_launch_scopes(profile.scopes, ehr_launch=launch is not None), cfg.v1_scopes_only)
    nonce = secrets.token_urlsafe(16) if "openid" in scope.split() else None
    pkce = new_pkce()
    state = ctx.states.create(
        browser_session=browser_session,
        tenant_id=tenant_id,
        provider_id=provider_id,
        issuer=profile.fhir_base,
        code_verifier=pkce.verifier,
        nonce=nonce,
        redirect_uri=ctx.settings.redirect_uri,
        redirect_target=redirect_target,
        launch="ehr" if launch is not None else None,
        scope=scope,
        extra={"user_ref": user_ref} if user_ref else {},
    )
    ctx.states.purge_now_and_then()  # the states no request can use any more go as new logins start
    detail = {"provider": provider_id, "ehr_launch": launch is not None, "scope": scope}
    audit_event(ctx, "authorize.start", "success", tenant_id, user_ref or "anonymous", detail=detail)
    return build_authorize_url(
        cfg,
        client_id=profile.client_id,
        redirect_uri=ctx.settings.redirect_uri,
        scope=scope,
        state=state,
        aud=profile.fhir_base,
        code_challenge=pkce.challenge,
        launch=launch,
        nonce=nonce,
    )


def _audit_failure(ctx: ServiceContext, stored: ConsumedState, code: str, **detail: str | None) -> None:
    extra = {k: v for k, v in detail.items() if v is not None}
    actor = str(stored.extra.get("user_ref") or "anonymous")
    audit_event(
        ctx,
        "authorize.complete",
        "failure",
        stored.tenant_id,
        actor,
        detail={"provider": stored.provider_id, "error_code": code, **extra},
    )


def complete_authorization(
    ctx: ServiceContext,
    *,
    state: str | None,
    code: str | None,
    error: str | None,
    error_description: str | None,
    browser_session: str | None,
) -> CallbackResult:
    """Consume the state first (SAL-13), then handle the EHR's error or exchange the code.

    The audit records the same code the caller is answered with; the state keeps the outcome for a reload of
    this callback (``callback_replay``), and names the connection in the transaction that stores it and its tokens
    (``CallbackLink``): an unexpected error after that (a bug) is answered "connected, but something went wrong
    afterwards", not "nothing was shared".
    """
    try:
        stored = ctx.states.consume(
            state or "", browser_session=browser_session or "", replay_key=replay_key(code, error)
        )
    except InvalidStateError as exc:
        raise StateRefusedError(str(exc)) from None
    link = CallbackLink(ctx, state or "")
    try:
        result = _finish(ctx, stored, code=code, error=error, error_description=error_description, link=link)
    except ServiceError as exc:
        record_outcome(ctx, state or "", failed_outcome(exc))
        raise
    except Exception as exc:
        record_outcome(ctx, state or "", CallbackOutcome("abandoned"))
        logger.exception("the callback stopped on an unexpected %s", type(exc).__name__)  # redacted traceback
        raise interrupted_error(ctx, link.connection_id) from exc
    record_outcome(ctx, state or "", CallbackOutcome("connected", connection_id=result.connection_id))
    return result


def _finish(
    ctx: ServiceContext,
    stored: ConsumedState,
    *,
    code: str | None,
    error: str | None,
    error_description: str | None,
    link: CallbackLink,
) -> CallbackResult:
    """The consumed state's callback: the EHR's error, or the code exchanged."""
    if error:
        failure = callback_error(error, error_description)
        _audit_failure(
            ctx,
            stored,
            failure.code,
            ehr_error=failure.ehr_error,
            ehr_error_description=failure.ehr_error_description,
        )
        raise AuthorizationRefusedError(
            failure.message,
            code=failure.code,
            ehr_error=failure.ehr_error,
            ehr_error_description=failure.ehr_error_description,
        )
    if not code:
        _audit_failure(ctx, stored, "invalid_request", ehr_error=None)
        raise InvalidInputError("callback has neither 'code' nor 'error'")
    try:
        return _exchange(ctx, stored, code, link)
    except ServiceError as exc:
        _audit_failure(ctx, stored, exc.code)
        raise
    except ce.EhrSyncError as exc:
        refused = _without_secrets(service_error_from(exc), code, stored.code_verifier)
        _audit_failure(ctx, stored, refused.code, message=sanitize_description(refused.message))
        raise refused from None


def _without_secrets(error: ServiceError, *values: str) -> ServiceError:
    """The EHR's words without the code or verifier it may echo back ("Invalid authorization code: <code>")."""
    message = error.message
    for value in values:
        message = message.replace(value, "[REDACTED]") if value else message
    if message == error.message:
        return error
    return EhrCallError(message, code=error.code, **error.details)


def _code_grant(
    ctx: ServiceContext, profile: ClientProfile, stored: ConsumedState, code: str
) -> tuple[SmartConfiguration, TokenResponse]:
    """Exchange the code (SAL-14). A 200 answer that cannot be used still issued a grant nobody will hold: the
    tokens it carried are revoked at the EHR (best effort, once out of the call budget this exchange holds) before
    its error is raised on, without them (``unstored_tokens``)."""
    with ctx.call_budget(profile.provider_id, profile.fhir_base):  # eCW counts these calls too
        cfg = discover(profile.fhir_base, http=ctx.http, cache=ctx.discovery)
        try:
            return cfg, exchange_code(
                cfg.token_endpoint,
                http=ctx.http,
                client_auth=profile.client_auth(ctx.settings, "authorization_code"),
                code=code,
                redirect_uri=stored.redirect_uri or ctx.settings.redirect_uri,
                code_verifier=stored.code_verifier,
            )
        except ce.UnusableTokenAnswerError as exc:
            unusable = exc
    issued, unusable.issued_tokens = unusable.issued_tokens, ()
    revoke_issued(ctx, profile, cfg, issued, "of an unusable token answer")
    raise unusable


def _exchange(ctx: ServiceContext, stored: ConsumedState, code: str, link: CallbackLink) -> CallbackResult:
    with ctx.db.session() as session:
        profile = resolve_profile(session, ctx.cipher, ctx.settings, stored.tenant_id, stored.provider_id)
    if normalize_issuer(profile.fhir_base) != normalize_issuer(stored.issuer):
        raise IssuerRefusedError("the provider's FHIR base changed during the authorization")
    cfg, token = _code_grant(ctx, profile, stored, code)
    granted = token.scope if token.scope else (stored.scope or "")  # RFC 6749 §5.1: absent means as asked
    subject = check_grant(ctx, profile, cfg, token, granted=granted, nonce=stored.nonce)  # refused: revoked
    kept = keep_connection(
        ctx,
        profile,
        cfg,
        token,
        reauthorize=True,
        action="authorize.complete",
        actor=str(stored.extra.get("user_ref") or "anonymous"),
        detail={"granted_scope": granted, "asked_scope": stored.scope},
        kind=ConnectionKind.PATIENT,
        patient_id=subject.patient_id,
        encounter_id=token.encounter,
        fhir_user=subject.fhir_user,
        granted_scopes=granted,
        record=link.record,
        on_saved=link.saved,
    )
    logger.info("connection %s authorized for tenant %s", kept.connection_id, profile.tenant_id)
    return CallbackResult(kept.connection_id, profile.tenant_id, stored.redirect_target)
