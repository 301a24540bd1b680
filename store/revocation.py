"""Revoking a disconnected connection's tokens at the EHR (RFC 7009, SAL-34), and what came of it.

The person asked to disconnect, so the tokens are deleted here whatever the EHR says (``TokenVault.disconnect``).
A revocation not made is therefore never silent: :class:`Revocation` says which tokens the EHR confirmed and why the
others were not revoked, in words the answer, the audit row and the CLI repeat (never a token).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from sqlalchemy.orm import Session

from connectors.errors import DiscoveryError, EhrSyncError, FhirError, OAuthError, TransportError
from connectors.smart import ClientAuth, revoke_token
from store._grants import GrantContext
from store.crypto import TokenCipher
from store.models import Connection, TokenRecord
from store.tokenrows import open_field

__all__ = ["Revocation", "RevocationOutcome", "revoke_at_server", "revoke_tokens"]

logger = logging.getLogger(__name__)

#: ``revoked``: the EHR confirmed every stored token. ``no_tokens``: none was stored. ``not_offered``: the EHR
#: advertises no revocation endpoint. ``not_sent``: no revocation was sent, because the vendor's shared call budget
#: (eCW) had no free call, or a problem on this side stopped it first (the stored tokens cannot be decrypted, the
#: client profile or FHIR base is unusable: ``error_code`` says which). ``failed``: the EHR failed, throttled or
#: refused it (``error_code`` says how).
RevocationOutcome = Literal["revoked", "no_tokens", "not_offered", "not_sent", "failed"]
_TOKEN_WORDS = {"refresh_token": "refresh token", "access_token": "access token"}
#: What the EHR itself answered (or failed to): a revocation stopped by one of these "failed" at the EHR; any other
#: error raised before a revocation request went out is a problem here, and the revocation was "not_sent".
_EHR_FAILURES = (TransportError, OAuthError, FhirError)
_BUDGET_BUSY = "call_budget_busy"


@dataclass(frozen=True)
class Revocation:
    """What became of revoking one connection's tokens at the EHR; names no token (safe to show, log and audit).

    ``confirmed``: the token types (``refresh_token``, ``access_token``) the EHR confirmed revoked; ``error``: the
    connector error that stopped it (``not_sent``: ``call_budget_busy`` or the local problem, e.g.
    ``token_undecryptable``; ``failed``: the EHR's)."""

    outcome: RevocationOutcome
    confirmed: tuple[str, ...] = ()
    error: EhrSyncError | None = None

    @property
    def revoked(self) -> bool:
        """Whether the EHR confirmed the revocation of every stored token."""
        return self.outcome == "revoked"

    @property
    def error_code(self) -> str | None:
        return self.error.code if self.error is not None else None

    def audit_detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"revocation": self.outcome, "revoked_at_server": self.revoked}
        if self.confirmed:
            detail["confirmed"] = list(self.confirmed)
        if self.error is not None:
            detail["error_code"] = self.error.code
        return detail

    def describe(self) -> str:
        """One plain sentence: what was revoked at the EHR, and what was only deleted here and stays valid there."""
        if self.outcome == "revoked":
            return "the tokens were revoked at the EHR and deleted"
        if self.outcome == "no_tokens":
            return "no tokens were stored, so there was nothing to revoke at the EHR"
        if self.outcome == "not_offered":
            return (
                "the tokens were deleted here but not revoked at the EHR: it offers no token revocation, so they "
                "stay valid there until they expire"
            )
        why = self._why()
        if self.confirmed:
            done = " and ".join(_TOKEN_WORDS[t] for t in self.confirmed)
            return (
                f"the tokens were deleted here but only the {done} was revoked at the EHR: {why} for the other, "
                "which stays valid at the EHR until it expires (revoke the app's access at the EHR to end it sooner)"
            )
        return (
            f"the tokens were deleted here but NOT revoked at the EHR: {why}; they stay valid at the EHR until they "
            "expire (revoke the app's access at the EHR to end it sooner)"
        )

    def _why(self) -> str:
        """Why a revocation was not (fully) made, without blaming the EHR for a problem on this side."""
        if self.outcome == "failed":
            return f"the EHR did not confirm the revocation ({self.error_code})"
        if self.error is None or self.error.code == _BUDGET_BUSY:
            return "the vendor's shared call budget had no free call, so the revocation was not sent"
        where = (
            "the EHR's SMART configuration could not be read"
            if isinstance(self.error, DiscoveryError)
            else "a problem on this side, not at the EHR, stopped it"
        )
        return f"the revocation was not sent: {where} ({self.error.code}: {self.error.message})"


def revoke_at_server(
    grants: GrantContext, cipher: TokenCipher, session: Session, conn: Connection, row: TokenRecord
) -> Revocation:
    """Revoke the refresh then the access token where the EHR offers revocation (SAL-34); never raises an EHR error.

    Each request (the discovery too, when not cached) spends the active call budget: a busy one sends nothing and
    is ``not_sent``, like an EHR that is down is ``failed``. The client auth is resolved and every token decrypted
    before the first revocation request: a problem there (``token_undecryptable``, an unusable client profile) is
    ``not_sent`` with its code, never blamed on the EHR."""
    try:
        config = grants.configuration(conn)
        if not config.revocation_endpoint:
            logger.info("connection %s: server offers no revocation endpoint", conn.id)
            return Revocation("not_offered")
        auth = grants.client_auth(session, conn)
        # every token opened before the first request: one that cannot be decrypted stops the revocation unsent
        fields = [f for f in ("refresh_token", "access_token") if getattr(row, f"{f}_ct") is not None]
        tokens = [(field, open_field(cipher, row, field)) for field in fields]
    except EhrSyncError as exc:
        return _not_made(f"connection {conn.id}", (), exc)
    audience = conn.token_endpoint or config.token_endpoint
    return revoke_tokens(
        config.revocation_endpoint,
        tokens,
        http=grants.http,
        client_auth=auth,
        audience=audience,
        owner=f"connection {conn.id}",
    )


def revoke_tokens(
    endpoint: str,
    tokens: Sequence[tuple[str, str]],
    *,
    http: httpx.Client,
    client_auth: ClientAuth,
    audience: str | None,
    owner: str,
) -> Revocation:
    """Send the revocations of ``tokens`` (``(token type, token)``, the refresh token first: revoking it usually
    kills the access tokens from it, SAL-34), one request each, under whatever call budget is active; never raises
    an EHR error. ``owner`` names whose tokens they are in the log (``connection <id>``; never a token)."""
    confirmed: list[str] = []
    try:
        for field, token in tokens:
            revoke_token(
                endpoint, http=http, client_auth=client_auth, token=token, token_type_hint=field, audience=audience
            )
            confirmed.append(field)
    except EhrSyncError as exc:
        return _not_made(owner, tuple(confirmed), exc)
    return Revocation("revoked", tuple(confirmed))


def _not_made(owner: str, confirmed: tuple[str, ...], exc: EhrSyncError) -> Revocation:
    """A busy call budget, or an error of this side before any request: ``not_sent``; the EHR's: ``failed``."""
    ehr = exc.code != _BUDGET_BUSY and isinstance(exc, _EHR_FAILURES)
    outcome: RevocationOutcome = "failed" if ehr else "not_sent"
    logger.warning("%s: revocation %s (%s)", owner, outcome, exc.code)
    return Revocation(outcome, confirmed, exc)
