"""Sandbox knobs for what real authorization servers do that its defaults do not (SAL-15, SAL-20)."""

from __future__ import annotations

from sandbox import SandboxServer
from tests.sandbox.helpers import (
    authorize,
    authorize_params,
    backend_client,
    backend_token_response,
    exchange,
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


def test_sal26_reissue_refresh_token_answers_a_reauthorization_with_the_same_grant(sandbox: SandboxServer) -> None:
    """Some EHRs answer a new authorization of the same client and user with the refresh token issued before; one
    revocation of it then ends both sign-ins (the knob ``unstored_tokens`` is tested against)."""
    sandbox.admin.settings(reissue_refresh_token=True)
    cid, first = patient_login(sandbox)
    sandbox.admin.preapprove(cid, "pat1")
    verifier, challenge = pkce()
    scope = "launch/patient openid fhirUser offline_access patient/*.rs"
    got = query_of(authorize(sandbox, authorize_params(sandbox, cid, scope, challenge)))
    second = exchange(sandbox, cid, got["code"], verifier).json()
    assert second["refresh_token"] == first["refresh_token"] and second["access_token"] != first["access_token"]
    sandbox.admin.preapprove(cid, "pat2")
    verifier, challenge = pkce()
    got = query_of(authorize(sandbox, authorize_params(sandbox, cid, scope, challenge)))
    other = exchange(sandbox, cid, got["code"], verifier).json()
    assert other["refresh_token"] != first["refresh_token"]  # another patient: another grant
    state = sandbox.state.auth
    assert state.tokens[first["access_token"]].family == state.tokens[second["access_token"]].family
