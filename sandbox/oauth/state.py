"""In-memory authorization state: registered clients, pending consents, codes and token families."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ClientType = Literal["public", "confidential-symmetric", "confidential-asymmetric", "backend"]


class ClientRegistration(BaseModel):
    """Body of ``POST /admin/clients``."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1)
    client_type: ClientType
    client_secret: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    redirect_uris: list[str] = Field(default_factory=list)
    allowed_scopes: str | None = None

    @model_validator(mode="after")
    def _credentials_fit_type(self) -> ClientRegistration:
        if self.client_type == "confidential-symmetric" and not self.client_secret:
            raise ValueError("confidential-symmetric clients need a client_secret")
        if self.client_type in ("confidential-asymmetric", "backend") and not (self.jwks or self.jwks_url):
            raise ValueError(f"{self.client_type} clients need jwks or jwks_url")
        if self.client_type != "backend" and not self.redirect_uris:
            raise ValueError("user-facing clients need at least one redirect_uri")
        return self


@dataclass
class Context:
    """Launch context bound to a code and to the tokens it yields."""

    patient: str | None = None
    encounter: str | None = None
    fhir_user: str | None = None


@dataclass
class PendingAuthorization:
    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    code_challenge: str
    nonce: str | None
    context: Context
    needs_patient: bool
    expires_at: float


@dataclass
class CodeGrant:
    client_id: str
    redirect_uri: str
    code_challenge: str
    scope: str
    nonce: str | None
    context: Context
    expires_at: float
    used: bool = False
    family: str = field(default_factory=lambda: secrets.token_hex(8))


@dataclass
class TokenRecord:
    kind: Literal["access", "refresh"]
    client_id: str
    scope: str
    context: Context
    family: str
    expires_at: float | None
    online: bool = False
    used: bool = False
    revoked: bool = False

    def live(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)


class AuthState:
    """All OAuth state, guarded by one lock (the sandbox is small and correctness beats throughput here)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.clients: dict[str, ClientRegistration] = {}
        self.preapprovals: dict[str, tuple[str, str | None]] = {}
        self.launches: dict[str, Context] = {}
        self.pending: dict[str, PendingAuthorization] = {}
        self.codes: dict[str, CodeGrant] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self.jtis: dict[tuple[str, str], float] = {}

    def issue(self, record: TokenRecord) -> str:
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = record
        return token

    def revoke_family(self, family: str) -> None:
        with self.lock:
            for rec in self.tokens.values():
                if rec.family == family:
                    rec.revoked = True

    def live_refresh(self, client_id: str, context: Context, now: float) -> tuple[str, TokenRecord] | None:
        """A live, unspent refresh token of ``client_id`` for the same user (patient and fhirUser), if any."""
        with self.lock:
            for token, rec in self.tokens.items():
                same_user = (rec.context.patient, rec.context.fhir_user) == (context.patient, context.fhir_user)
                if (
                    rec.kind == "refresh"
                    and rec.client_id == client_id
                    and same_user
                    and rec.live(now)
                    and not rec.used
                ):
                    return token, rec
        return None

    def lookup(self, token: str, kind: Literal["access", "refresh"]) -> TokenRecord | None:
        rec = self.tokens.get(token)
        return rec if rec is not None and rec.kind == kind else None

    def remember_jti(self, iss: str, jti: str, exp: float) -> bool:
        """False when this (iss, jti) was already seen and has not expired (SAL-31 replay)."""
        now = time.time()
        with self.lock:
            for key in [k for k, e in self.jtis.items() if e < now]:
                del self.jtis[key]
            if (iss, jti) in self.jtis:
                return False
            self.jtis[(iss, jti)] = exp
            return True

    def logout(self, patient: str | None) -> int:
        """Simulated end of the user's session: ``online_access`` refresh tokens die (SAL-26)."""
        n = 0
        with self.lock:
            for rec in self.tokens.values():
                if rec.online and not rec.revoked and (patient is None or rec.context.patient == patient):
                    rec.revoked = True
                    n += 1
        return n
