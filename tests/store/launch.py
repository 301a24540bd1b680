"""A standalone launch against the sandbox EHR, for store tests that need real tokens: the authorize redirect
(headless consent) and the code exchange, with one redirect URI."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx

from connectors.smart import PublicClientAuth, SmartConfiguration, TokenResponse, build_authorize_url, exchange_code
from sandbox import SandboxServer

REDIRECT = "http://127.0.0.1:9/callback"
PATIENT_SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


def register_public_client(sandbox: SandboxServer, client_id: str, scope: str = PATIENT_SCOPE) -> str:
    """Register ``client_id`` as a public client and pre-approve the first patient; returns that patient's id."""
    sandbox.admin.register_client(client_id, "public", redirect_uris=[REDIRECT])
    patient = sandbox.admin.patients()[0]
    sandbox.admin.preapprove(client_id, patient, scope)
    return patient


def authorize_code(
    http: httpx.Client,
    sandbox: SandboxServer,
    cfg: SmartConfiguration,
    *,
    client_id: str,
    state: str,
    code_challenge: str,
    scope: str = PATIENT_SCOPE,
    nonce: str | None = None,
) -> str:
    """The code the sandbox's authorize redirect carries back for ``state`` (asserted to come back unchanged)."""
    url = build_authorize_url(
        cfg,
        client_id=client_id,
        redirect_uri=REDIRECT,
        scope=scope,
        state=state,
        aud=sandbox.fhir_base,
        code_challenge=code_challenge,
        nonce=nonce,
    )
    answer = http.get(url, follow_redirects=False)
    assert answer.status_code in (302, 303), answer.text[:300]
    back = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert back["state"] == [state]
    return back["code"][0]


def exchange(http: httpx.Client, cfg: SmartConfiguration, client_id: str, code: str, verifier: str) -> TokenResponse:
    """The public client's authorization-code grant with its PKCE verifier."""
    return exchange_code(
        cfg.token_endpoint,
        http=http,
        client_auth=PublicClientAuth(client_id),
        code=code,
        redirect_uri=REDIRECT,
        code_verifier=verifier,
    )
