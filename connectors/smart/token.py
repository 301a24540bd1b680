"""Token endpoint grants (SAL-14, SAL-15, SAL-23, SAL-32) and the parsed ``TokenResponse``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from connectors.errors import OAuthError, UnusableTokenAnswerError
from connectors.http.dates import parse_http_date
from connectors.smart._http import post_form, raise_for_oauth_error, require_json_object
from connectors.smart.client_auth import ClientAuth
from connectors.smart.token_fields import context_id, fhir_context, granted_scope, lenient_str, opt_str, patient_banner

__all__ = [
    "DEFAULT_EXPIRES_IN",
    "MAX_EXPIRES_IN",
    "TokenResponse",
    "client_credentials_grant",
    "exchange_code",
    "parse_token_response",
    "refresh_grant",
]

logger = logging.getLogger(__name__)

DEFAULT_EXPIRES_IN = 300  # SAL-15: absent expires_in means "assume 5 minutes"
#: A longer lifetime is taken as this one (a 401 still refreshes): beyond it lie sentinels and the calendar's end.
MAX_EXPIRES_IN = 366 * 24 * 3600
_MAX_DATE_SKEW = timedelta(minutes=5)

_KNOWN = {
    "access_token",
    "token_type",
    "expires_in",
    "scope",
    "refresh_token",
    "id_token",
    "patient",
    "encounter",
    "fhirContext",
    "need_patient_banner",
    "smart_style_url",
    "intent",
    "tenant",
}

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TokenResponse:
    """A successful token answer; ``extra`` keeps every field ehrsync does not model (SAL-15)."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int
    scope: str | None
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    patient: str | None = None
    encounter: str | None = None
    fhir_context: tuple[dict[str, Any], ...] = ()
    need_patient_banner: bool | None = None
    smart_style_url: str | None = None
    intent: str | None = None
    tenant: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    issued_at: datetime = field(default_factory=_utcnow)
    expires_at: datetime = field(default_factory=_utcnow)

    def launch_context(self) -> dict[str, Any]:
        """Non-secret launch context worth storing with the tokens (SAL-17)."""
        ctx: dict[str, Any] = {}
        for key, value in (
            ("patient", self.patient),
            ("encounter", self.encounter),
            ("need_patient_banner", self.need_patient_banner),
            ("smart_style_url", self.smart_style_url),
            ("intent", self.intent),
            ("tenant", self.tenant),
        ):
            if value is not None:
                ctx[key] = value
        if self.fhir_context:
            ctx["fhirContext"] = [dict(item) for item in self.fhir_context]
        return ctx


def _expires_in(payload: Mapping[str, Any]) -> int:
    value = payload.get("expires_in")
    if value is None or (isinstance(value, str) and not value.strip()):  # blank is absent, as a blank scope is
        return DEFAULT_EXPIRES_IN
    if isinstance(value, bool):
        raise OAuthError("invalid_response", "token response field 'expires_in' must be a number")
    try:
        seconds = int(float(value))
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: inf
        raise OAuthError("invalid_response", "token response field 'expires_in' must be a number") from exc
    if seconds <= 0:
        raise OAuthError("invalid_response", "token response field 'expires_in' must be positive")
    if seconds > MAX_EXPIRES_IN:
        logger.warning("token response expires_in %d s is beyond a year; taken as %d s", seconds, MAX_EXPIRES_IN)
        return MAX_EXPIRES_IN
    return seconds


def _issued_at(date_header: str | None, now: datetime) -> datetime:
    """Anchor the lifetime at the server's ``Date`` unless it disagrees with us by more than 5 min."""
    server = parse_http_date(date_header)  # the shared parser: an impossible date is None, never an exception
    if server is None:
        return now
    if abs(server - now) > _MAX_DATE_SKEW:
        skew = (server - now).total_seconds()
        logger.warning("token endpoint Date header is %.0f s off our clock; using local time", skew)
        return now
    return min(server, now)


def parse_token_response(
    payload: Mapping[str, Any],
    *,
    date_header: str | None = None,
    clock: Clock = _utcnow,
) -> TokenResponse:
    """Validate a token JSON body (SAL-15): Bearer only (any case), defaults for optional fields."""
    access_token = payload.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise OAuthError("invalid_response", "token response lacks 'access_token'")
    token_type = payload.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise OAuthError("invalid_response", f"unsupported token_type {token_type!r} (expected Bearer)")
    expires_in = _expires_in(payload)
    issued_at = _issued_at(date_header, clock())
    return TokenResponse(
        access_token=access_token,
        token_type="Bearer",  # noqa: S106 - the scheme name, not a secret
        expires_in=expires_in,
        scope=granted_scope(payload),
        refresh_token=opt_str(payload, "refresh_token") or None,
        id_token=opt_str(payload, "id_token") or None,
        patient=context_id(payload, "patient"),
        encounter=context_id(payload, "encounter"),
        fhir_context=fhir_context(payload.get("fhirContext")),
        need_patient_banner=patient_banner(payload),
        smart_style_url=lenient_str(payload, "smart_style_url"),
        intent=lenient_str(payload, "intent"),
        tenant=lenient_str(payload, "tenant"),
        extra={k: v for k, v in payload.items() if k not in _KNOWN},
        issued_at=issued_at,
        expires_at=issued_at + timedelta(seconds=expires_in),
    )


def _token_request(
    token_endpoint: str,
    form: dict[str, str],
    *,
    http: httpx.Client,
    client_auth: ClientAuth,
    clock: Clock,
    what: str,
) -> TokenResponse:
    body, headers = client_auth.apply(form, token_endpoint)
    response = post_form(http, token_endpoint, body, headers=headers, client_id=client_auth.client_id)
    raise_for_oauth_error(response, what)
    payload = require_json_object(response, what)
    try:
        return parse_token_response(payload, date_header=response.headers.get("Date"), clock=clock)
    except OAuthError as exc:  # the grant happened: a rotated refresh token it carried is live, the old one spent
        status = response.status_code
        problem = f"{what}: the token endpoint's HTTP {status} answer is unusable: {exc.error_description}"
        issued = _issued_tokens(payload)
        if form.get("grant_type") == "refresh_token":  # only a refresh has a grant to keep its rotated token for
            raise UnusableTokenAnswerError(problem, dict(issued).get("refresh_token"), status) from None
        raise UnusableTokenAnswerError(problem, None, status, issued) from None  # a grant nobody keeps: to revoke


def _issued_tokens(payload: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """``(token type, token)`` an unusable answer carried, refresh token first (SAL-34); a non-string is no token."""
    found = ((hint, payload.get(hint)) for hint in ("refresh_token", "access_token"))
    return tuple((hint, value) for hint, value in found if isinstance(value, str) and value)


def exchange_code(
    token_endpoint: str,
    *,
    http: httpx.Client,
    client_auth: ClientAuth,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    clock: Clock = _utcnow,
) -> TokenResponse:
    """Authorization-code grant with PKCE (SAL-14)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    return _token_request(
        token_endpoint, form, http=http, client_auth=client_auth, clock=clock, what="authorization_code grant"
    )


def refresh_grant(
    token_endpoint: str,
    *,
    http: httpx.Client,
    client_auth: ClientAuth,
    refresh_token: str,
    scope: str | None = None,
    clock: Clock = _utcnow,
) -> TokenResponse:
    """Refresh-token grant (SAL-23); ``scope`` only to narrow the grant."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if scope:
        form["scope"] = scope
    return _token_request(token_endpoint, form, http=http, client_auth=client_auth, clock=clock, what="refresh grant")


def client_credentials_grant(
    token_endpoint: str,
    *,
    http: httpx.Client,
    client_auth: ClientAuth,
    scope: str,
    clock: Clock = _utcnow,
) -> TokenResponse:
    """Backend Services token (SAL-32): a new signed assertion per call, never a refresh token."""
    form = {"grant_type": "client_credentials", "scope": scope}
    return _token_request(
        token_endpoint, form, http=http, client_auth=client_auth, clock=clock, what="client_credentials grant"
    )
