"""An authorization code is redeemed only by the client it was issued to, with the ``redirect_uri`` of its
authorization request (SAL-14 server side; RFC 6749 §4.1.3), over a real socket."""

from __future__ import annotations

from sandbox import SandboxServer
from tests.sandbox.helpers import REDIRECT, authorize, authorize_params, exchange, pkce, public_client, query_of

SCOPE = "launch/patient patient/*.rs offline_access"


def _code(sb: SandboxServer, cid: str) -> tuple[str, str]:
    """A fresh code (and its verifier) for ``cid``, the patient approving at once."""
    sb.admin.preapprove(cid, "pat1")
    verifier, challenge = pkce()
    return query_of(authorize(sb, authorize_params(sb, cid, SCOPE, challenge)))["code"], verifier


def test_sal14_a_code_is_redeemed_only_by_its_client_and_with_its_redirect_uri(sandbox: SandboxServer) -> None:
    owner, other = public_client(sandbox), public_client(sandbox)
    code, verifier = _code(sandbox, owner)
    stolen = exchange(sandbox, other, code, verifier)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant", stolen.text
    assert "another client" in stolen.json()["error_description"]
    code, verifier = _code(sandbox, owner)
    elsewhere = exchange(sandbox, owner, code, verifier, redirect_uri=REDIRECT + "/other")
    assert elsewhere.status_code == 400 and elsewhere.json()["error"] == "invalid_grant", elsewhere.text
    assert "redirect_uri" in elsewhere.json()["error_description"]
    code, verifier = _code(sandbox, owner)
    assert exchange(sandbox, owner, code, verifier).status_code == 200  # its own client and redirect: redeemed
