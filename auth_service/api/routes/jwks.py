"""Our public JWKS for private_key_jwt (SAL-30): current key plus previous keys during rotation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

__all__ = ["router"]

router = APIRouter(tags=["jwks"])
JWKS_MAX_AGE = 300


@router.get("/api/integrations/ehr/jwks", summary="Public signing keys (no private members)")
def jwks(request: Request) -> JSONResponse:
    body: dict[str, Any] = request.app.state.jwks  # built once at start-up from the settings
    return JSONResponse(
        body,
        media_type="application/jwk-set+json",
        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"},
    )
