"""Bearer-token checks on the FHIR API (SAL-22); scope enforcement is in ``permission``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from sandbox.fhir.responses import FhirFailure
from sandbox.oauth.state import TokenRecord

if TYPE_CHECKING:
    from sandbox.state import SandboxState

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ehrsync-sandbox", error="invalid_token"'}


def bearer(st: SandboxState, request: Request) -> TokenRecord:
    """The live access token of the request, or 401 with an OperationOutcome."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise FhirFailure(401, "login", "a Bearer access token is required", _CHALLENGE)
    rec = st.auth.lookup(header[7:].strip(), "access")
    if rec is None or not rec.live(st.clock.timestamp()):
        raise FhirFailure(401, "expired", "access token is invalid, revoked or expired", _CHALLENGE)
    return rec
