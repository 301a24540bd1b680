"""Authorization endpoint: consent, picker, pre-approval, EHR launch and every refusal (SAL-07..14)."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from sandbox import SandboxServer
from tests.sandbox.helpers import (
    REDIRECT,
    authorize,
    authorize_params,
    bearer,
    exchange,
    pkce,
    public_client,
    query_of,
)

SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


def _consent(sb: SandboxServer, params: dict[str, str]) -> tuple[str, str]:
    resp = authorize(sb, params)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    request_id = re.search(r"name='request_id' value='([^']+)'", resp.text)
    assert request_id is not None
    return resp.text, request_id.group(1)


def test_sal07_standalone_consent_page_with_patient_picker_then_code(sandbox: SandboxServer) -> None:
    cid = public_client(sandbox)
    verifier, challenge = pkce()
    params = authorize_params(sandbox, cid, SCOPE, challenge)
    html, request_id = _consent(sandbox, params)
    assert "<select id='patient_id'" in html and "pat3" in html
    resp = httpx.post(
        sandbox.base_url + "/oauth/authorize",
        data={"request_id": request_id, "decision": "approve", "patient_id": "pat3"},
    )
    got = query_of(resp)
    assert got["state"] == params["state"]  # state echoed
    token = exchange(sandbox, cid, got["code"], verifier).json()
    assert token["patient"] == "pat3"
    assert token["token_type"] == "Bearer" and token["expires_in"] > 0 and token["refresh_token"]
    assert token["scope"] == SCOPE


def test_sal13_user_denies_gives_access_denied(sandbox: SandboxServer) -> None:
    cid = public_client(sandbox)
    _, challenge = pkce()
    params = authorize_params(sandbox, cid, SCOPE, challenge)
    _, request_id = _consent(sandbox, params)
    resp = httpx.post(sandbox.base_url + "/oauth/authorize", data={"request_id": request_id, "decision": "deny"})
    got = query_of(resp)
    assert got["error"] == "access_denied" and got["state"] == params["state"]


def test_consent_without_a_chosen_patient_is_refused(sandbox: SandboxServer) -> None:
    cid = public_client(sandbox)
    _, challenge = pkce()
    _, request_id = _consent(sandbox, authorize_params(sandbox, cid, SCOPE, challenge))
    resp = httpx.post(
        sandbox.base_url + "/oauth/authorize",
        data={"request_id": request_id, "decision": "approve", "patient_id": "pat99999"},
    )
    assert resp.status_code == 400


def test_sal06_ehr_launch_resolves_single_use_context(sandbox: SandboxServer) -> None:
    cid = public_client(sandbox)
    launch = sandbox.admin.launch("pat4", encounter_id="enc4-1")
    sandbox.admin.preapprove(cid, "pat4")
    verifier, challenge = pkce()
    scope = "launch openid fhirUser patient/*.rs"
    got = query_of(authorize(sandbox, authorize_params(sandbox, cid, scope, challenge, launch=launch)))
    token = exchange(sandbox, cid, got["code"], verifier).json()
    assert token["patient"] == "pat4" and token["encounter"] == "enc4-1"
    assert token["fhirContext"] == [{"reference": "Encounter/enc4-1", "type": "Encounter"}]  # SAL-16 objects
    assert "refresh_token" not in token  # neither offline_access nor online_access
    # the launch value is single use
    sandbox.admin.preapprove(cid, "pat4")
    again = query_of(authorize(sandbox, authorize_params(sandbox, cid, scope, pkce()[1], launch=launch)))
    assert again["error"] == "invalid_request"


def test_sal16_fhir_context_strings_flag(sandbox: SandboxServer) -> None:
    sandbox.admin.settings(fhir_context_strings=True, auto_approve=True)
    cid = public_client(sandbox)
    launch = sandbox.admin.launch("pat2", encounter_id="enc2-0")
    verifier, challenge = pkce()
    got = query_of(authorize(sandbox, authorize_params(sandbox, cid, "launch patient/*.rs", challenge, launch=launch)))
    token = exchange(sandbox, cid, got["code"], verifier).json()
    assert token["fhirContext"] == ["Encounter/enc2-0"]


def test_auto_approve_uses_the_first_patient(sandbox: SandboxServer) -> None:
    sandbox.admin.settings(auto_approve=True)
    cid = public_client(sandbox)
    verifier, challenge = pkce()
    got = query_of(authorize(sandbox, authorize_params(sandbox, cid, SCOPE, challenge)))
    assert exchange(sandbox, cid, got["code"], verifier).json()["patient"] == "pat0"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge": ""}, "invalid_request"),  # SAL-11 missing challenge
        ({"code_challenge_method": "plain"}, "invalid_request"),  # SAL-11 plain refused
        ({"aud": "http://127.0.0.1:1/fhir"}, "invalid_request"),  # SAL-10 wrong aud
        ({"aud": "TRAILING_SLASH"}, "invalid_request"),  # SAL-10 exact match
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "patient/Observation.sr"}, "invalid_scope"),  # SAL-18 letter order
    ],
)
def test_bad_authorize_requests_redirect_with_error(sandbox: SandboxServer, change: dict[str, str], error: str) -> None:
    cid = public_client(sandbox)
    sandbox.admin.preapprove(cid, "pat1")
    params = authorize_params(sandbox, cid, SCOPE, pkce()[1])
    params.update({k: (sandbox.fhir_base + "/" if v == "TRAILING_SLASH" else v) for k, v in change.items()})
    got = query_of(authorize(sandbox, params))
    assert got["error"] == error
    assert got["state"] == params["state"]
    assert "code" not in got


@pytest.mark.parametrize("change", [{"client_id": "nobody"}, {"redirect_uri": REDIRECT + "/other"}])
def test_sal12_unknown_client_or_redirect_shows_error_page_without_redirect(
    sandbox: SandboxServer, change: dict[str, str]
) -> None:
    cid = public_client(sandbox)
    params = authorize_params(sandbox, cid, SCOPE, pkce()[1])
    params.update(change)
    resp = authorize(sandbox, params)
    assert resp.status_code == 400
    assert "location" not in resp.headers
    assert "Authorization error" in resp.text


def test_sal11_wrong_or_missing_verifier_is_invalid_grant(sandbox: SandboxServer) -> None:
    for verifier in ("x" * 50, None):
        cid = public_client(sandbox)
        sandbox.admin.preapprove(cid, "pat1")
        _, challenge = pkce()
        got = query_of(authorize(sandbox, authorize_params(sandbox, cid, SCOPE, challenge)))
        resp = exchange(sandbox, cid, got["code"], verifier)
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


def test_sal14_code_reuse_is_invalid_grant_and_revokes_issued_tokens(sandbox: SandboxServer) -> None:
    cid = public_client(sandbox)
    sandbox.admin.preapprove(cid, "pat1")
    verifier, challenge = pkce()
    got = query_of(authorize(sandbox, authorize_params(sandbox, cid, SCOPE, challenge)))
    first = exchange(sandbox, cid, got["code"], verifier).json()
    assert httpx.get(sandbox.fhir_base + "/Patient/pat1", headers=bearer(first["access_token"])).status_code == 200
    second = exchange(sandbox, cid, got["code"], verifier)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    assert httpx.get(sandbox.fhir_base + "/Patient/pat1", headers=bearer(first["access_token"])).status_code == 401
    refresh = httpx.post(
        sandbox.base_url + "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": cid},
    )
    assert refresh.json()["error"] == "invalid_grant"


def test_sal14_code_expires_after_its_lifetime(sandbox: SandboxServer) -> None:
    cid = public_client(sandbox)
    sandbox.admin.preapprove(cid, "pat1")
    verifier, challenge = pkce()
    got = query_of(authorize(sandbox, authorize_params(sandbox, cid, SCOPE, challenge)))
    sandbox.admin.settings(clock_shift_s=61)
    resp = exchange(sandbox, cid, got["code"], verifier)
    assert resp.json()["error"] == "invalid_grant"


def test_code_bound_to_redirect_uri_and_client(sandbox: SandboxServer) -> None:
    cid = public_client(sandbox)
    other = public_client(sandbox)
    sandbox.admin.preapprove(cid, "pat1")
    verifier, challenge = pkce()
    got = query_of(authorize(sandbox, authorize_params(sandbox, cid, SCOPE, challenge)))
    assert exchange(sandbox, other, got["code"], verifier).json()["error"] == "invalid_grant"


def test_sal38_no_tokens_or_codes_in_logs(sandbox: SandboxServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cid = public_client(sandbox)
    sandbox.admin.preapprove(cid, "pat1")
    verifier, challenge = pkce()
    got = query_of(authorize(sandbox, authorize_params(sandbox, cid, SCOPE, challenge)))
    token = exchange(sandbox, cid, got["code"], verifier).json()
    httpx.get(sandbox.fhir_base + "/Patient/pat1", headers=bearer(token["access_token"]))
    server = ("sandbox", "uvicorn", "fastapi", "starlette")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(server))
    assert "code issued" in logged  # the flow was logged at all
    for secret in (got["code"], verifier, token["access_token"], token["refresh_token"], token["id_token"]):
        assert secret not in logged


def test_sal06_ehr_launcher_page_opens_the_app_with_iss_and_launch(sandbox: SandboxServer) -> None:
    url = sandbox.admin.ehr_launch_url("http://127.0.0.1:9/launch?app=1", "pat7", "enc7-0")
    resp = httpx.get(url, follow_redirects=False)
    assert resp.status_code == 302
    location = httpx.URL(resp.headers["location"])
    assert location.params["iss"] == sandbox.fhir_base and location.params["app"] == "1"
    cid = public_client(sandbox)
    sandbox.admin.preapprove(cid, "pat7")
    verifier, challenge = pkce()
    params = authorize_params(sandbox, cid, "launch patient/*.rs", challenge, launch=location.params["launch"])
    token = exchange(sandbox, cid, query_of(authorize(sandbox, params))["code"], verifier).json()
    assert token["patient"] == "pat7" and token["encounter"] == "enc7-0"


@pytest.mark.parametrize("aud", ["{base}/", "{base}/other", "https://elsewhere.example/fhir"])
def test_sal10_an_aud_other_than_the_fhir_base_is_invalid_request(sandbox: SandboxServer, aud: str) -> None:
    """SAL-10 (server): ``aud`` must be the FHIR base exactly; a trailing slash more, another path or another server
    is ``invalid_request`` (redirected to the registered redirect_uri), and no code is issued."""
    cid = public_client(sandbox)
    sandbox.admin.preapprove(cid, "pat1")
    _, challenge = pkce()
    params = authorize_params(sandbox, cid, "launch/patient patient/*.rs", challenge)
    params["aud"] = aud.format(base=sandbox.fhir_base)
    got = query_of(authorize(sandbox, params))
    assert got["error"] == "invalid_request" and "code" not in got
    assert got["state"] == params["state"]
