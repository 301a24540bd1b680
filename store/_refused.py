"""A refresh the token server refused for good, told in words an operator can act on.

RFC 6749 §5.2: ``invalid_grant`` means the refresh token is no longer good (revoked, expired, already used);
``unauthorized_client`` to a ``refresh_token`` grant means the client's registration does not allow that grant
at all (Epic apps without "refresh tokens" enabled, or a vendor withdrawing it). Neither changes by asking
again: both end the connection in ``needs_reauth``, the reason saying which one (and, for a rotated-away token,
when the previous attempt's answer was lost, which explains why a working connection fell to re-authorization).

A backend connection's ``client_credentials`` grant refused by the token endpoint (an OAuth refusal, not an outage:
``connectors.errors.is_refusal``) is as final: ``unauthorized_client`` (the registration does not allow that grant),
``invalid_client`` (client authentication failed: unknown or disabled client, key or JWKS not registered),
``invalid_grant`` (Epic's answer to a bad or expired client assertion, or a key it does not know), ``invalid_scope``
and the rest. Nothing changes until an admin fixes the registration, and no patient can: a backend connection has
neither a patient nor a refresh token, so it never becomes ``needs_reauth``. It becomes ``client_rejected``, as when
the EHR refuses a freshly minted token, and an admin's retry (``TokenVault.reactivate``) mints again and
makes it active only if that works.

A patient connection's ``refresh_token`` grant refused with ``invalid_client`` (RFC 6749 §5.2: client authentication
failed: the app's secret rotated or expired at the EHR, its ``private_key_jwt`` key not registered, the client
disabled) is the app's problem, not the patient's: their grant is untouched (the server refused the client before it
looked at the refresh token, which is kept) and re-authorizing would fail at the code exchange the same way. So it is
``client_rejected`` too, never ``needs_reauth`` (no re-authorization link is sent), and not a plain failure either:
asking again with the same credentials on every sync of every such connection is refused again, and some EHRs lock a
client after repeated failed authentications. The admin fixes the credentials, then retries
(``TokenVault.reactivate``): a refresh with the stored refresh token, active again only if it works.
``unauthorized_client`` stays ``needs_reauth`` (above): the grant it refuses is the patient's to obtain again once the
registration allows refresh tokens.
"""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.errors import (
    NeedsReauthError,
    OAuthError,
    TransportError,
    UnauthorizedClientError,
    client_credentials_refusal,
    is_refusal,
)
from store._refresh_apply import RefreshOutcome
from store._states import CLIENT_AUTH_REFUSED, CLIENT_GRANT_REFUSED, RETRY_HINT
from store.errors import ClientRejectedError
from store.models import AuditEvent, ConnectionStatus

__all__ = [
    "answer_lost",
    "client_auth_refused_outcome",
    "client_grant_refused",
    "client_refused_outcome",
    "credential_check",
    "last_answer_lost",
    "refused_outcome",
]

#: The audit ``reason`` of a refresh refused because the client may not use the refresh_token grant.
REFRESH_NOT_ALLOWED = "refresh_grant_not_allowed"


def answer_lost(exc: TransportError) -> bool:
    """Whether the request may have reached the server and its answer was lost (a timeout or reset after
    sending); a connection never made (refused, DNS, connect timeout) sent nothing."""
    return not isinstance(exc.__cause__, (httpx.ConnectError, httpx.ConnectTimeout))


def last_answer_lost(session: Session, connection_id: str, basis: int | None) -> bool:
    """Whether the last refresh of this very tokens row (version ``basis``) lost its answer: a server that
    rotates refresh tokens may have used up the stored one then."""
    event = session.scalar(
        select(AuditEvent)
        .where(AuditEvent.connection_id == connection_id, AuditEvent.action == "token.refresh")
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    if event is None or event.outcome != "transient_failure":
        return False
    detail = event.detail or {}
    return bool(detail.get("answer_lost")) and detail.get("version") == basis


def refused_outcome(
    exc: OAuthError, connection_id: str, basis: int | None, detail: dict[str, object], *, lost: bool
) -> RefreshOutcome:
    """``needs_reauth`` with the reason: the refresh token refused, or the refresh grant not allowed."""
    audit: dict[str, object] = {**detail, "error_code": exc.error, "status_code": exc.status}
    if isinstance(exc, UnauthorizedClientError):
        audit["reason"] = REFRESH_NOT_ALLOWED
        why = (
            "the EHR's client registration does not allow the refresh_token grant; fix the app registration "
            "(e.g. enable refresh tokens for the app in the EHR's developer console), then authorize again"
        )
    else:
        why = "re-authorization required"
        if lost:
            audit["after_lost_answer"] = True
            why += (
                " (the previous refresh attempt's answer was lost: the EHR may have rotated the refresh token then, "
                "and the new one never arrived)"
            )
    return RefreshOutcome(
        error=NeedsReauthError(f"connection {connection_id}: refresh refused ({exc.error}): {why}"),
        needs_reauth=True,
        audit=("needs_reauth", audit),
        basis=basis,
    )


def client_grant_refused(exc: OAuthError) -> bool:
    """Whether ``exc``, answered to a client_credentials grant, is final (no retry changes it): any refusal of the
    client or its request, ``invalid_grant`` included, as creating a backend connection judges it; not the EHR
    failing or throttling (5xx, 408, 429, ``temporarily_unavailable``, an answer without an OAuth error body)."""
    return is_refusal(exc)


def client_refused_outcome(
    exc: OAuthError, connection_id: str, basis: int | None, detail: dict[str, object]
) -> RefreshOutcome:
    """``client_rejected`` with the reason: the token endpoint refused the backend client's grant itself. The EHR's
    ``error`` (any code: a vendor's own too) is kept as one line of printable text, capped, as its description is:
    it is repeated on every later use of the connection and in the run's error."""
    code = _said(exc.error, 64) or "unknown"
    audit: dict[str, object] = {
        **detail,
        "error_code": code,
        "status_code": exc.status,
        "reason": CLIENT_GRANT_REFUSED,
    }
    said = _said(exc.error_description)
    message = (
        f"connection {connection_id}: the token endpoint refused the client_credentials grant ({code}"
        f"{f': {said}' if said else ''}): {client_credentials_refusal(code)}; check the client registration "
        "(client id, JWKS URL / key id, allowed grant types and scopes, client enabled), then retry it with "
        "POST /api/integrations/smart/refresh"
    )
    return RefreshOutcome(
        error=ClientRejectedError(message),
        new_status=ConnectionStatus.CLIENT_REJECTED,
        audit=("client_rejected", audit),
        basis=basis,
    )


#: What to check when the token endpoint refuses the client's authentication, by the client's auth method (no secret).
_CREDENTIAL_CHECKS = {
    "client_secret_basic": (
        "the client secret in the provider config against the one registered at the EHR (rotated or expired there?)"
    ),
    "private_key_jwt": (
        "that the EHR has this service's key registered (the key id it signs with; the JWKS it fetches, "
        "GET /api/integrations/ehr/jwks) and the client enabled"
    ),
}
_PUBLIC_CHECK = "that the client id is still registered and enabled at the EHR"


def credential_check(auth_method: str) -> str:
    """What to check when the EHR refuses the client's authentication made with ``auth_method`` (names no secret)."""
    return _CREDENTIAL_CHECKS.get(auth_method, _PUBLIC_CHECK)


def client_auth_refused_outcome(
    exc: OAuthError, connection_id: str, basis: int | None, detail: dict[str, object], auth_method: str
) -> RefreshOutcome:
    """``client_rejected`` with the reason: the token endpoint refused the client's authentication on a refresh
    (``invalid_client``). The tokens row is left as it is: the refresh token was never accepted nor used."""
    check = credential_check(auth_method)
    audit: dict[str, object] = {
        **detail,
        "error_code": exc.error,
        "status_code": exc.status,
        "reason": CLIENT_AUTH_REFUSED,
        "auth_method": auth_method,
        "check": check,
    }
    said = _said(exc.error_description)
    message = (
        f"connection {connection_id}: the token endpoint refused the client's authentication on the refresh_token "
        f"grant ({exc.error}{f': {said}' if said else ''}): the app's credentials, not the patient's grant; check "
        f"{check}, {RETRY_HINT}: the refresh token was kept, the patient need not authorize again"
    )
    return RefreshOutcome(
        error=ClientRejectedError(message),
        new_status=ConnectionStatus.CLIENT_REJECTED,
        audit=("client_rejected", audit),
        basis=basis,
    )


def _said(description: str | None, cap: int = 200) -> str:
    """The EHR's ``error_description`` as one line of printable text, capped (it often names the fix: "no key with
    kid ..."); the OAuth error carried it in its message before, so it is no more exposed than it was."""
    text = " ".join("".join(c if c.isprintable() else " " for c in (description or "")[: cap * 2]).split())
    return text if len(text) <= cap else text[: cap - 1] + "…"
