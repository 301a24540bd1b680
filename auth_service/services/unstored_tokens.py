"""Tokens the EHR issued that ehrsync failed to store: revoked there, best effort (SAL-34).

A code exchange (or a backend grant) succeeded, then the transaction that stores the connection with its tokens
failed (the app database refused or lost a write, a bug between the writes) and rolled back: the EHR has issued
tokens that are kept nowhere here, yet stay valid there until they expire. Where the EHR advertises a revocation
endpoint they are revoked at once, the refresh token first, each request under the vendor's shared call budget (a
wait of at most ``EHR_CALL_BUDGET_WAIT_SECONDS``) and the service's request deadline (``EHRSYNC_REQUEST_DEADLINE_S``):
at most two requests. Best effort: whatever becomes of it, the caller re-raises the storing failure and answers as
before; the log says what became of the revocation (never a token).
"""

from __future__ import annotations

import logging

from auth_service.services.context import ServiceContext
from auth_service.services.profiles import ClientProfile
from connectors.smart import SmartConfiguration, TokenResponse
from store.revocation import Revocation, revoke_tokens

__all__ = ["revoke_unstored"]

logger = logging.getLogger(__name__)


def revoke_unstored(
    ctx: ServiceContext, profile: ClientProfile, cfg: SmartConfiguration, token: TokenResponse
) -> Revocation | None:
    """Revoke ``token``'s refresh and access tokens at the EHR; ``None`` when a failure here stopped it (the
    database failing the call budget too, an unusable client profile). Never raises (but ``BaseException``)."""
    owner = f"tokens for tenant {profile.tenant_id} (provider {profile.provider_id}) not stored"
    if not cfg.revocation_endpoint:
        logger.warning("%s: the EHR offers no revocation, so they stay valid there until they expire", owner)
        return Revocation("not_offered")
    tokens = [(hint, value) for hint, value in _token_values(token) if value]
    try:
        auth = profile.client_auth(ctx.settings)
        with ctx.call_budget(profile.provider_id, profile.fhir_base):
            audience = cfg.token_endpoint
            revocation = revoke_tokens(
                cfg.revocation_endpoint, tokens, http=ctx.http, client_auth=auth, audience=audience, owner=owner
            )
    except Exception as exc:  # best effort: the storing failure is what the caller reports
        logger.warning("%s: revocation not sent (%s)", owner, type(exc).__name__)
        return None
    if revocation.revoked:
        logger.warning("%s: revoked at the EHR (%s)", owner, ", ".join(revocation.confirmed))
    return revocation


def _token_values(token: TokenResponse) -> list[tuple[str, str | None]]:
    return [("refresh_token", token.refresh_token), ("access_token", token.access_token)]
