"""Token endpoint: refresh modes, client authentication, private_key_jwt, backend scopes (SAL-15..35)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest

from sandbox import SandboxServer
from tests.sandbox.helpers import (
    REDIRECT,
    assertion,
    authorize,
    authorize_params,
    backend_client,
    backend_token_response,
    bearer,
    ec_key,
    exchange,
    new_client_id,
    patient_login,
    pkce,
    query_of,
    rsa_key,
)


def _refresh(sb: SandboxServer, cid: str, token: str, **extra: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": token, "client_id": cid, **extra}
    return httpx.post(sb.base_url + "/oauth/token", data=data)


def test_sal15_token_response_fields_and_no_store(sandbox: SandboxServer) -> None:
    _, token = patient_login(sandbox)
    assert {"access_token", "token_type", "expires_in", "scope", "refresh_token", "id_token", "patient"} <= set(token)
    assert token["need_patient_banner"] is True
    sandbox.admin.settings(smart_style_url="http://127.0.0.1:1/style.json", access_token_lifetime_s=120)
    _, token = patient_login(sandbox)
    assert token["smart_style_url"] == "http://127.0.0.1:1/style.json"
    assert token["expires_in"] == 120


def test_sal19_sal33_id_token_is_rs256_with_fhir_user(sandbox: SandboxServer) -> None:
    cid, token = patient_login(sandbox, patient="pat5")
    jwks = httpx.get(sandbox.base_url + "/oauth/jwks").json()
    header = jwt.get_unverified_header(token["id_token"])
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(
        token["id_token"], jwt.PyJWK(key).key, algorithms=["RS256"], audience=cid, issuer=sandbox.fhir_base
    )
    assert claims["fhirUser"] == sandbox.fhir_base + "/Patient/pat5"
    _, no_openid = patient_login(sandbox, scope="launch/patient patient/*.rs")
    assert "id_token" not in no_openid


def test_sal24_sal26_rotation_is_default_and_old_refresh_token_is_rejected(sandbox: SandboxServer) -> None:
    cid, token = patient_login(sandbox)
    first = _refresh(sandbox, cid, token["refresh_token"])
    assert first.status_code == 200
    new = first.json()
    assert new["refresh_token"] != token["refresh_token"]
    assert new["patient"] == "pat1"
    again = _refresh(sandbox, cid, token["refresh_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert _refresh(sandbox, cid, new["refresh_token"]).status_code == 200  # plain rotation: family lives on


def test_sal26_reuse_detection_revokes_the_family(sandbox: SandboxServer) -> None:
    sandbox.admin.settings(refresh_mode="reuse_detection")
    cid, token = patient_login(sandbox)
    new = _refresh(sandbox, cid, token["refresh_token"]).json()
    assert _refresh(sandbox, cid, token["refresh_token"]).json()["error"] == "invalid_grant"
    assert _refresh(sandbox, cid, new["refresh_token"]).json()["error"] == "invalid_grant"
    assert httpx.get(sandbox.fhir_base + "/Patient/pat1", headers=bearer(new["access_token"])).status_code == 401


def test_sal26_no_rotation_keeps_the_refresh_token(sandbox: SandboxServer) -> None:
    sandbox.admin.settings(refresh_mode="none")
    cid, token = patient_login(sandbox)
    for _ in range(2):
        resp = _refresh(sandbox, cid, token["refresh_token"])
        assert resp.status_code == 200 and "refresh_token" not in resp.json()


def test_sal26_expiring_refresh_tokens(sandbox: SandboxServer) -> None:
    sandbox.admin.settings(refresh_token_lifetime_s=30)
    cid, token = patient_login(sandbox)
    sandbox.admin.settings(clock_shift_s=31)
    assert _refresh(sandbox, cid, token["refresh_token"]).json()["error"] == "invalid_grant"


def test_sal26_online_access_dies_at_logout(sandbox: SandboxServer) -> None:
    cid, token = patient_login(sandbox, scope="launch/patient online_access patient/*.rs", patient="pat6")
    assert sandbox.admin.logout("pat6") >= 1
    assert _refresh(sandbox, cid, token["refresh_token"]).json()["error"] == "invalid_grant"


def test_sal23_refresh_may_narrow_but_not_widen_scope(sandbox: SandboxServer) -> None:
    cid, token = patient_login(sandbox)
    narrowed = _refresh(sandbox, cid, token["refresh_token"], scope="patient/*.rs offline_access")
    assert narrowed.json()["scope"] == "patient/*.rs offline_access"
    wider = _refresh(sandbox, cid, narrowed.json()["refresh_token"], scope="user/*.rs")
    assert wider.json()["error"] == "invalid_scope"


def test_sal21_grant_subset_and_v1_answer_knobs(sandbox: SandboxServer) -> None:
    sandbox.admin.settings(grant_scope_subset=["launch/patient", "patient/Observation.rs"], answer_v1_scopes=True)
    _, token = patient_login(sandbox, scope="launch/patient patient/Observation.rs patient/Condition.rs")
    assert token["scope"] == "launch/patient patient/Observation.read"


def _symmetric(sb: SandboxServer) -> str:
    cid = new_client_id("sym")
    sb.admin.register_client(cid, "confidential-symmetric", client_secret="s3cret:+/", redirect_uris=[REDIRECT])
    return cid


def _code(sb: SandboxServer, cid: str) -> tuple[str, str]:
    sb.admin.preapprove(cid, "pat1")
    verifier, challenge = pkce()
    got = query_of(authorize(sb, authorize_params(sb, cid, "launch/patient patient/*.rs", challenge)))
    return got["code"], verifier


def _basic(cid: str, secret: str) -> str:
    from urllib.parse import quote

    return "Basic " + base64.b64encode(f"{quote(cid, safe='')}:{quote(secret, safe='')}".encode()).decode()


def test_sal28_client_secret_basic(sandbox: SandboxServer) -> None:
    cid = _symmetric(sandbox)
    code, verifier = _code(sandbox, cid)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    bad = httpx.post(sandbox.base_url + "/oauth/token", data=form, headers={"Authorization": _basic(cid, "wrong")})
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    assert bad.headers["www-authenticate"].startswith("Basic")
    good = httpx.post(sandbox.base_url + "/oauth/token", data=form, headers={"Authorization": _basic(cid, "s3cret:+/")})
    assert good.status_code == 200, good.text


def test_sal28_client_secret_post_only_with_flag_and_confidential_needs_auth(sandbox: SandboxServer) -> None:
    cid = _symmetric(sandbox)
    code, verifier = _code(sandbox, cid)
    no_auth = exchange(sandbox, cid, code, verifier)
    assert no_auth.status_code == 401 and no_auth.json()["error"] == "invalid_client"
    code, verifier = _code(sandbox, cid)
    refused = exchange(sandbox, cid, code, verifier, client_secret="s3cret:+/")
    assert refused.status_code == 401
    sandbox.admin.settings(accept_client_secret_post=True)
    code, verifier = _code(sandbox, cid)
    assert exchange(sandbox, cid, code, verifier, client_secret="s3cret:+/").status_code == 200


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_sal31_sal32_backend_client_credentials(sandbox: SandboxServer, alg: str) -> None:
    cid, key, jwk = backend_client(sandbox, alg=alg)
    resp = backend_token_response(sandbox, cid, key, jwk, "system/*.rs")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["scope"] == "system/*.rs" and "refresh_token" not in body


def _assertion_case(sb: SandboxServer, case: str) -> httpx.Response:
    cid, key, jwk = backend_client(sb)
    now = int(time.time())
    if case == "replay":
        first = assertion(sb, cid, key, jwk)
        form = {
            "grant_type": "client_credentials",
            "scope": "system/*.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": first,
        }
        assert httpx.post(sb.base_url + "/oauth/token", data=form).status_code == 200
        return httpx.post(sb.base_url + "/oauth/token", data=form)
    if case == "bad_signature":
        other, _ = rsa_key()
        return backend_token_response(sb, cid, other, jwk)
    if case == "wrong_kty":
        ec, _ = ec_key()
        return backend_token_response(sb, cid, ec, {**jwk, "alg": "ES384"})
    overrides: dict[str, dict[str, Any]] = {
        "bad_aud": {"aud": sb.fhir_base},
        "expired": {"exp": now - 120},
        "too_far": {"exp": now + 3600},
        "iss_sub": {"sub": "someone-else"},
        "unknown_kid": {"headers": {"kid": "nope"}},
        "jku": {"headers": {"jku": "http://127.0.0.1:1/jwks"}},
    }
    return backend_token_response(sb, cid, key, jwk, **overrides[case])


@pytest.mark.parametrize(
    "case", ["replay", "bad_aud", "expired", "too_far", "iss_sub", "unknown_kid", "jku", "bad_signature", "wrong_kty"]
)
def test_sal31_assertion_checks_give_invalid_client(sandbox: SandboxServer, case: str) -> None:
    resp = _assertion_case(sandbox, case)
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "invalid_client"


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, Any]]]:
    published: dict[str, Any] = {"keys": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(published).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", published
    server.shutdown()
    server.server_close()


def test_sal31_jwks_url_is_fetched_and_jku_must_match(sandbox: SandboxServer, jwks_server: Any) -> None:
    url, published = jwks_server
    key, jwk = ec_key()
    published["keys"].append(jwk)
    cid = new_client_id("jku")
    sandbox.admin.register_client(cid, "backend", jwks_url=url)
    assert backend_token_response(sandbox, cid, key, jwk).status_code == 200
    assert backend_token_response(sandbox, cid, key, jwk, headers={"jku": url}).status_code == 200
    assert backend_token_response(sandbox, cid, key, jwk, headers={"jku": url + "?x"}).status_code == 401


def test_sal32_backend_scopes_are_intersected_with_allowed(sandbox: SandboxServer) -> None:
    cid, key, jwk = backend_client(sandbox, allowed="system/Observation.rs system/Patient.rs")
    narrowed = backend_token_response(sandbox, cid, key, jwk, "system/*.rs")
    assert set(narrowed.json()["scope"].split()) == {"system/Observation.rs", "system/Patient.rs"}
    refused = backend_token_response(sandbox, cid, key, jwk, "system/Condition.rs")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
    patient_scope = backend_token_response(sandbox, cid, key, jwk, "patient/*.rs")
    assert patient_scope.json()["error"] == "invalid_scope"


def test_sal29_asymmetric_confidential_client_uses_jwt_on_code_exchange(sandbox: SandboxServer) -> None:
    key, jwk = rsa_key()
    cid = new_client_id("asym")
    sandbox.admin.register_client(cid, "confidential-asymmetric", jwks={"keys": [jwk]}, redirect_uris=[REDIRECT])
    code, verifier = _code(sandbox, cid)
    resp = exchange(
        sandbox,
        cid,
        code,
        verifier,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=assertion(sandbox, cid, key, jwk),
    )
    assert resp.status_code == 200, resp.text


def test_sal34_sal35_revoke_and_introspect(sandbox: SandboxServer) -> None:
    cid, token = patient_login(sandbox, patient="pat2")
    url = sandbox.base_url
    active = httpx.post(url + "/oauth/introspect", data={"token": token["access_token"], "client_id": cid}).json()
    assert active["active"] is True and active["patient"] == "pat2" and active["client_id"] == cid
    assert active["exp"] > time.time() and "patient/*.rs" in active["scope"]
    assert httpx.post(url + "/oauth/revoke", data={"token": "unknown", "client_id": cid}).status_code == 200
    assert (
        httpx.post(url + "/oauth/revoke", data={"token": token["refresh_token"], "client_id": cid}).status_code == 200
    )
    gone = httpx.post(url + "/oauth/introspect", data={"token": token["access_token"], "client_id": cid}).json()
    assert gone == {"active": False}
    assert _refresh(sandbox, cid, token["refresh_token"]).json()["error"] == "invalid_grant"
    assert httpx.post(url + "/oauth/introspect", data={"token": "x"}).status_code == 401


def test_unsupported_grant_type(sandbox: SandboxServer) -> None:
    cid, _ = patient_login(sandbox)
    resp = httpx.post(sandbox.base_url + "/oauth/token", data={"grant_type": "password", "client_id": cid})
    assert resp.json()["error"] == "unsupported_grant_type"


def test_sal28_non_ascii_secret_is_compared_not_crashed(sandbox) -> None:
    """A secret outside ASCII is urlencoded in Basic (SAL-28); a wrong one is 401 invalid_client, never a 500."""
    import base64
    from urllib.parse import quote

    import httpx

    sandbox.admin.register_client(
        "nonascii-client", "confidential-symmetric", redirect_uris=["http://127.0.0.1/cb"], client_secret="sécret-ü"
    )
    for secret, status in (("sécret-ü", 400), ("wrong-é", 401)):
        basic = base64.b64encode(f"{quote('nonascii-client')}:{quote(secret)}".encode()).decode()
        response = httpx.post(
            f"{sandbox.base_url}/oauth/token",
            data={"grant_type": "authorization_code", "code": "nope", "redirect_uri": "http://127.0.0.1/cb"},
            headers={"Authorization": f"Basic {basic}"},
        )
        assert response.status_code == status, response.text
        assert response.json()["error"] == ("invalid_grant" if status == 400 else "invalid_client")


def test_sal19_sal26_offline_access_outlives_the_users_logout_and_online_access_does_not(
    sandbox: SandboxServer,
) -> None:
    """SAL-19: ``offline_access`` refresh works after the user logs out; ``online_access`` only while the user stays
    logged in (SAL-26: the sandbox's simulated logout)."""
    offline_cid, offline = patient_login(sandbox, scope="launch/patient offline_access patient/*.rs", patient="pat7")
    online_cid, online = patient_login(sandbox, scope="launch/patient online_access patient/*.rs", patient="pat7")
    assert sandbox.admin.logout("pat7") == 1
    assert _refresh(sandbox, online_cid, online["refresh_token"]).json()["error"] == "invalid_grant"
    assert _refresh(sandbox, offline_cid, offline["refresh_token"]).status_code == 200
