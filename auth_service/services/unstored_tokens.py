"""Tokens the EHR issued that ehrsync does not keep: revoked there, best effort (SAL-34).

A code exchange (or a backend grant) succeeded, then no connection keeps its tokens: the transaction that stores
the connection with them failed (the app database refused or lost a write, a bug between the writes) and rolled
back, the sign-in was refused (``grant_checks``: an id_token that does not verify, no patient), or the token answer
itself was unusable (a 200 without a Bearer ``token_type`` or ``access_token``: ``UnusableTokenAnswerError``). The
EHR has issued tokens that are kept nowhere here, yet stay valid there until they expire. Where the EHR advertises a
revocation endpoint they are revoked at once, the refresh token first, each request under the vendor's shared call
budget (a wait of at most ``EHR_CALL_BUDGET_WAIT_SECONDS``) and the service's request deadline
(``EHRSYNC_REQUEST_DEADLINE_S``): at most two requests. Best effort: whatever becomes of it, the caller raises its
own error and answers as before; the log says what became of the revocation (never a token).

Not when a stored connection holds one of them: an EHR may answer a new authorization of the same user and client
with the refresh token (the grant) it issued before, and revoking it, or an access token of that grant (RFC 7009
§2.1 lets a server revoke the whole grant then), would end that existing connection (``store.held_tokens``). Nothing
is revoked then; so too when that check itself fails (a connection it cannot rule out is never ended).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from auth_service.services.context import ServiceContext
from auth_service.services.profiles import ClientProfile
from connectors.smart import SmartConfiguration, TokenResponse
from store.held_tokens import connection_holding
from store.revocation import Revocation, revoke_tokens

__all__ = ["revoke_issued", "revoke_unstored"]

logger = logging.getLogger(__name__)


def revoke_unstored(
    ctx: ServiceContext, profile: ClientProfile, cfg: SmartConfiguration, token: TokenResponse
) -> Revocation | None:
    """Revoke ``token``'s refresh and access tokens at the EHR (see :func:`revoke_issued`)."""
    pairs = [("refresh_token", token.refresh_token), ("access_token", token.access_token)]
    return revoke_issued(ctx, profile, cfg, [(hint, value) for hint, value in pairs if value], "not stored")


def revoke_issued(
    ctx: ServiceContext,
    profile: ClientProfile,
    cfg: SmartConfiguration,
    tokens: Sequence[tuple[str, str]],
    why: str,
) -> Revocation | None:
    """Revoke ``tokens`` (``(token type, token)``, refresh token first) at the EHR; ``why`` says in the log why no
    connection keeps them. ``None`` when nothing was sent: a stored connection holds one of them (or that could not
    be ruled out), or a failure here stopped it (the database failing the call budget too, an unusable client
    profile). Never raises (but ``BaseException``)."""
    owner = f"tokens for tenant {profile.tenant_id} (provider {profile.provider_id}) {why}"
    if not tokens:
        return Revocation("no_tokens")
    if not cfg.revocation_endpoint:
        logger.warning("%s: the EHR offers no revocation, so they stay valid there until they expire", owner)
        return Revocation("not_offered")
    try:
        holder = connection_holding(
            ctx.db,
            ctx.cipher,
            [value for _, value in tokens],
            client_id=profile.client_id,
            token_endpoint=cfg.token_endpoint,
            fhir_base=profile.fhir_base,
        )
        if holder is not None:
            logger.warning("%s: not revoked, the EHR reissued a token connection %s holds", owner, holder)
            return None
        auth = profile.client_auth(ctx.settings)
        with ctx.call_budget(profile.provider_id, profile.fhir_base):
            audience = cfg.token_endpoint
            revocation = revoke_tokens(
                cfg.revocation_endpoint, tokens, http=ctx.http, client_auth=auth, audience=audience, owner=owner
            )
    except Exception as exc:  # best effort: the caller's own error is what it reports
        logger.warning("%s: revocation not sent (%s)", owner, type(exc).__name__)
        return None
    if revocation.revoked:
        logger.warning("%s: revoked at the EHR (%s)", owner, ", ".join(revocation.confirmed))
    return revocation
