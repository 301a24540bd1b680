"""A refresh the token server refused for good, told in words an operator can act on.

RFC 6749 §5.2: ``invalid_grant`` means the refresh token is no longer good (revoked, expired, already used);
``unauthorized_client`` to a ``refresh_token`` grant means the client's registration does not allow that grant
at all (Epic apps without "refresh tokens" enabled, or a vendor withdrawing it). Neither changes by asking
again: both end the connection in ``needs_reauth``, the reason saying which one (and, for a rotated-away token,
when the previous attempt's answer was lost, which explains why a working connection fell to re-authorization).
"""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.errors import NeedsReauthError, OAuthError, TransportError, UnauthorizedClientError
from store._refresh_apply import RefreshOutcome
from store.models import AuditEvent

__all__ = ["answer_lost", "last_answer_lost", "refused_outcome"]

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
