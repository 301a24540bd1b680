"""The three grants of ``/oauth/token`` and the SAL-15 token response."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.oauth.errors import OAuthFailure
from sandbox.oauth.keys import IdTokenFault, SigningKey
from sandbox.oauth.scopes import Grant, ScopeError, narrow, render, v2_syntax_error
from sandbox.oauth.state import AuthState, ClientRegistration, CodeGrant, Context, TokenRecord


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class TokenIssuer:
    """Issues tokens under the runtime settings; ``now`` comes from the (shiftable) server clock."""

    def __init__(
        self,
        state: AuthState,
        keys: SigningKey,
        cfg: SandboxConfig,
        fhir_base: str,
        now: float,
        id_token_fault: IdTokenFault | None = None,
    ) -> None:
        self.state, self.keys, self.cfg, self.fhir_base, self.now = state, keys, cfg, fhir_base, now
        self.id_token_fault = id_token_fault

    def _response(
        self,
        client: ClientRegistration,
        scope: str,
        ctx: Context,
        family: str,
        nonce: str | None,
        refresh: bool,
        reissued: str | None = None,
    ) -> dict[str, Any]:
        grant = Grant.parse(scope)
        lifetime = self.cfg.access_token_lifetime_s
        access = self.state.issue(TokenRecord("access", client.client_id, scope, ctx, family, self.now + lifetime))
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": render(grant, self.cfg.answer_v1_scopes),
        }
        if refresh and reissued is not None:
            body["refresh_token"] = reissued
        elif refresh and (grant.has("offline_access") or grant.has("online_access")):
            ttl = self.cfg.refresh_token_lifetime_s
            rec = TokenRecord(
                "refresh",
                client.client_id,
                scope,
                ctx,
                family,
                None if ttl is None else self.now + ttl,
                online=not grant.has("offline_access"),
            )
            body["refresh_token"] = self.state.issue(rec)
        if grant.has("openid") and grant.has("fhirUser") and ctx.fhir_user:
            body["id_token"] = self.keys.id_token(
                self.fhir_base, client.client_id, ctx.fhir_user, nonce, lifetime, self.id_token_fault
            )
        if ctx.patient:
            body["patient"] = ctx.patient
            body["need_patient_banner"] = self.cfg.need_patient_banner
        if ctx.encounter:
            body["encounter"] = ctx.encounter
            ref = f"Encounter/{ctx.encounter}"
            body["fhirContext"] = [ref] if self.cfg.fhir_context_strings else [{"reference": ref, "type": "Encounter"}]
        if self.cfg.smart_style_url:
            body["smart_style_url"] = self.cfg.smart_style_url
        for name in self.cfg.token_response_omit:
            body.pop(name, None)
        return body

    def authorization_code(self, client: ClientRegistration, form: Mapping[str, str]) -> dict[str, Any]:
        code = form.get("code", "")
        with self.state.lock:
            grant: CodeGrant | None = self.state.codes.get(code)
            if grant is None:
                raise OAuthFailure("invalid_grant", "unknown authorization code")
            if grant.used:
                # SAL-14: a replayed code revokes everything it produced.
                self.state.revoke_family(grant.family)
                raise OAuthFailure("invalid_grant", "authorization code already used")
            grant.used = True
        if self.now > grant.expires_at:
            raise OAuthFailure("invalid_grant", "authorization code expired")
        if grant.client_id != client.client_id:
            raise OAuthFailure("invalid_grant", "code was issued to another client")
        if form.get("redirect_uri") != grant.redirect_uri:
            raise OAuthFailure("invalid_grant", "redirect_uri does not match the authorization request")
        verifier = form.get("code_verifier")
        if not verifier or not secrets.compare_digest(s256(verifier), grant.code_challenge):
            raise OAuthFailure("invalid_grant", "PKCE code_verifier does not match the code_challenge")
        family, reissued = grant.family, None
        if self.cfg.reissue_refresh_token and (
            found := self.state.live_refresh(client.client_id, grant.context, self.now)
        ):
            reissued, family = found[0], found[1].family  # the grant issued before, its refresh token answered again
            grant.family = family  # a replay of this code revokes that grant
        return self._response(client, grant.scope, grant.context, family, grant.nonce, refresh=True, reissued=reissued)

    def refresh_token(self, client: ClientRegistration, form: Mapping[str, str]) -> dict[str, Any]:
        token = form.get("refresh_token", "")
        with self.state.lock:
            rec = self.state.lookup(token, "refresh")
            if rec is None or not rec.live(self.now) or rec.client_id != client.client_id:
                raise OAuthFailure("invalid_grant", "refresh token is unknown, revoked, expired or not yours")
            if rec.used:
                if self.cfg.refresh_mode == "reuse_detection":
                    self.state.revoke_family(rec.family)
                raise OAuthFailure("invalid_grant", "refresh token was already used")
            scope = rec.scope
            if form.get("scope"):
                asked = Grant.parse(form["scope"])
                if not set(asked.tokens) <= set(Grant.parse(rec.scope).tokens):
                    raise OAuthFailure("invalid_scope", "refresh may only narrow the original scope")
                scope = asked.text
            rotate = self.cfg.refresh_mode != "none"
            if rotate:
                rec.used = True
        body = self._response(client, scope, rec.context, rec.family, None, refresh=rotate)
        body.pop("id_token", None)
        return body

    def client_credentials(self, client: ClientRegistration, form: Mapping[str, str]) -> dict[str, Any]:
        if client.client_type == "public":
            raise OAuthFailure("unauthorized_client", "public clients cannot use client_credentials")
        try:
            asked = Grant.parse(form.get("scope", ""))
        except ScopeError as exc:
            raise OAuthFailure("invalid_scope", str(exc)) from None
        if not asked.resources or any(r.context != "system" for r in asked.resources):
            raise OAuthFailure("invalid_scope", "client_credentials needs system/ scopes only")
        if self.cfg.profile != "v2" and (refused := v2_syntax_error(asked)):
            raise OAuthFailure("invalid_scope", refused)
        granted = narrow(asked, Grant.parse(client.allowed_scopes)) if client.allowed_scopes else asked
        granted = subset(granted, self.cfg.grant_scope_subset)
        if not granted.resources:
            raise OAuthFailure("invalid_scope", "none of the requested scopes is allowed for this client")
        return self._response(client, granted.text, Context(), secrets.token_hex(8), None, refresh=False)


def subset(grant: Grant, allowed: list[str] | None) -> Grant:
    """SAL-21 knob: keep only requested scopes listed in ``grant_scope_subset``."""
    if allowed is None:
        return grant
    return Grant.parse(" ".join(t for t in grant.tokens if t in allowed))
