"""Token introspection (RFC 7662, SAL-35): diagnostics only, never an authorization decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from connectors.errors import OAuthError
from connectors.smart._http import post_form, raise_for_oauth_error, require_json_object
from connectors.smart.client_auth import ClientAuth

__all__ = ["IntrospectionResult", "introspect_token"]


@dataclass(frozen=True)
class IntrospectionResult:
    """``active`` plus the optional RFC 7662 / SMART members; ``raw`` keeps everything sent."""

    active: bool
    scope: str | None = None
    client_id: str | None = None
    exp: int | None = None
    patient: str | None = None
    encounter: str | None = None
    fhir_user: str | None = None
    iss: str | None = None
    sub: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def _s(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None


def introspect_token(
    introspection_endpoint: str,
    *,
    http: httpx.Client,
    client_auth: ClientAuth,
    token: str,
    token_type_hint: str | None = None,
    audience: str | None = None,
) -> IntrospectionResult:
    """Ask the server whether ``token`` is active and what it grants."""
    form = {"token": token}
    if token_type_hint:
        form["token_type_hint"] = token_type_hint
    body, headers = client_auth.apply(form, audience or introspection_endpoint)
    response = post_form(http, introspection_endpoint, body, headers=headers, client_id=client_auth.client_id)
    raise_for_oauth_error(response, "introspection")
    payload = require_json_object(response, "introspection")
    active = payload.get("active")
    if not isinstance(active, bool):
        raise OAuthError("invalid_response", "introspection response lacks boolean 'active'", None, 200)
    exp = payload.get("exp")
    return IntrospectionResult(
        active=active,
        scope=_s(payload, "scope"),
        client_id=_s(payload, "client_id"),
        exp=int(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None,
        patient=_s(payload, "patient"),
        encounter=_s(payload, "encounter"),
        fhir_user=_s(payload, "fhirUser"),
        iss=_s(payload, "iss"),
        sub=_s(payload, "sub"),
        raw=payload,
    )
