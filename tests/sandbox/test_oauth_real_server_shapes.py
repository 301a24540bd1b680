"""Sandbox knobs for what real authorization servers do that its defaults do not (SAL-15, SAL-20)."""

from __future__ import annotations

from sandbox import SandboxServer
from tests.sandbox.helpers import (
    authorize,
    authorize_params,
    backend_client,
    backend_token_response,
    patient_login,
    pkce,
    public_client,
    query_of,
)


def test_sal15_token_response_omit_leaves_fields_out_of_every_token_answer(sandbox: SandboxServer) -> None:
    sandbox.admin.settings(token_response_omit=["patient", "scope", "expires_in"])
    _, token = patient_login(sandbox)
    assert {"access_token", "token_type", "refresh_token"} <= set(token)
    assert not {"patient", "scope", "expires_in"} & set(token)


def test_sal20_a_v1_server_refuses_v2_scope_syntax_and_takes_v1(sandbox: SandboxServer) -> None:
    sandbox.admin.settings(profile="v1")
    cid = public_client(sandbox)
    sandbox.admin.preapprove(cid, "pat1")
    _, challenge = pkce()
    refused = query_of(authorize(sandbox, authorize_params(sandbox, cid, "launch/patient patient/*.rs", challenge)))
    assert refused["error"] == "invalid_scope"
    backend, key, jwk = backend_client(sandbox)
    v2 = backend_token_response(sandbox, backend, key, jwk, "system/*.rs")
    assert v2.status_code == 400 and v2.json()["error"] == "invalid_scope"
    v1 = backend_token_response(sandbox, backend, key, jwk, "system/*.read")
    assert v1.status_code == 200 and v1.json()["scope"] == "system/*.read"
