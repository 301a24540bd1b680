"""Revocation (RFC 7009, SAL-34) and introspection (RFC 7662, SAL-35)."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import pytest

from connectors.errors import OAuthError, TemporarilyUnavailableError
from connectors.smart import SecretClientAuth, introspect_token, revoke_token


def recorder(response: httpx.Response) -> tuple[httpx.Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response

    return httpx.Client(transport=httpx.MockTransport(handler)), seen


def test_sal34_revoke_posts_token_hint_and_client_auth() -> None:
    http, seen = recorder(httpx.Response(200))
    revoke_token(
        "https://e/revoke",
        http=http,
        client_auth=SecretClientAuth("c", "s"),
        token="RT",
        token_type_hint="refresh_token",
    )
    form = parse_qs(seen[0].content.decode())
    assert form == {"token": ["RT"], "token_type_hint": ["refresh_token"]}
    assert seen[0].headers["Authorization"].startswith("Basic ")


def test_sal34_revoke_server_error_is_temporary() -> None:
    http, _ = recorder(httpx.Response(503, json={"error": "temporarily_unavailable"}))
    with pytest.raises(TemporarilyUnavailableError):
        revoke_token("https://e/revoke", http=http, client_auth=SecretClientAuth("c", "s"), token="T")


def test_sal35_introspection_active_fields() -> None:
    body = {
        "active": True,
        "scope": "patient/*.rs",
        "client_id": "c",
        "exp": 1700000000,
        "patient": "p1",
        "encounter": "e1",
        "fhirUser": "Practitioner/9",
        "iss": "https://e/fhir",
        "sub": "9",
    }
    http, _ = recorder(httpx.Response(200, json=body))
    result = introspect_token("https://e/introspect", http=http, client_auth=SecretClientAuth("c", "s"), token="AT")
    assert (
        result.active and result.patient == "p1" and result.fhir_user == "Practitioner/9" and result.exp == 1700000000
    )
    assert (result.scope, result.client_id, result.encounter) == ("patient/*.rs", "c", "e1")
    assert (result.iss, result.sub) == ("https://e/fhir", "9")


def test_sal35_inactive_and_malformed() -> None:
    http, _ = recorder(httpx.Response(200, json={"active": False}))
    assert not introspect_token("https://e/i", http=http, client_auth=SecretClientAuth("c", "s"), token="AT").active
    http, _ = recorder(httpx.Response(200, json={"scope": "x"}))
    with pytest.raises(OAuthError, match="active"):
        introspect_token("https://e/i", http=http, client_auth=SecretClientAuth("c", "s"), token="AT")
