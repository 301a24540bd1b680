"""A refused second sign-in whose EHR reissued the refresh token an existing connection holds (SAL-34, SAL-26), over
real sockets: the sandbox's ``reissue_refresh_token`` answers a new authorization of the same client and patient with
the refresh token (the grant) it issued before, as some EHRs do.

The tokens of a refused sign-in are revoked at the EHR (``unstored_tokens``). Before, that revoked the reissued
refresh token too, and with it the grant of the existing connection: its next refresh was ``invalid_grant``, the
patient's working connection ``needs_reauth`` because a second sign-in failed. Now a token a stored connection holds
(compared through the vault, never logged) is not revoked, and the existing connection keeps working."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.auth_service.ehr import authorize_headless, patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.logcapture import capture_all_logs
from tests.auth_service.test_flows_sandbox import connect, register

LOGIN = "/api/integrations/smart/login?tenant=t1&provider=smart"
#: how the second sign-in is refused -> the sandbox knob that makes it so, and the code it is answered with
REFUSALS: dict[str, tuple[tuple[str, dict[str, Any]], str]] = {
    "no_patient": (("settings", {"token_response_omit": ["patient", "id_token"]}), "no_patient_context"),
    "unusable_answer": (
        ("faults", {"kind": "token_answer", "path": "/oauth/token", "error": "no_token_type"}),
        "token_exchange_failed",
    ),
}


def _refresh_tokens(sandbox: Any, client_id: str) -> dict[str, bool]:
    """Every refresh token the sandbox issued to ``client_id`` -> whether it was revoked."""
    with sandbox.state.auth.lock:
        tokens = sandbox.state.auth.tokens.items()
        return {t: rec.revoked for t, rec in tokens if rec.client_id == client_id and rec.kind == "refresh"}


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_sal34_a_refused_sign_in_never_revokes_the_grant_an_existing_connection_holds(
    make_settings: Any, sandbox: Any, refusal: str
) -> None:
    client_id = f"reissue-{uuid.uuid4().hex[:8]}"
    pid = patient_ids(sandbox)[4]
    (knob, setting), code = REFUSALS[refusal]
    sandbox_admin(sandbox, "settings", {"reissue_refresh_token": True})
    with (
        capture_all_logs() as logs,
        running_service(make_settings, sandbox, smart_practice(sandbox, client_id)) as svc,
    ):
        register(sandbox, svc, client_id, "public")
        conn_id = connect(sandbox, svc, client_id, pid)
        held = svc.ctx.vault.get_access_token(conn_id)
        sandbox_admin(sandbox, knob, setting)
        sandbox_admin(sandbox, "preapprove", {"client_id": client_id, "patient_id": pid})
        second = authorize_headless(svc, svc.base_url + LOGIN)
        assert second.status_code == 502 and second.json()["error"] == code, second.text
        (refresh,) = _refresh_tokens(sandbox, client_id)  # the EHR answered the same refresh token twice
        assert _refresh_tokens(sandbox, client_id) == {refresh: False}  # before: revoked, the existing grant ended
        assert "not revoked, the EHR reissued a token connection" in logs.text
        sandbox_admin(sandbox, "settings", {"token_response_omit": []})
        refreshed = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert refreshed.status_code == 200, refreshed.text  # before: 409 needs_reauth
        status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
        assert status["status"] == "active", status
    for token in (refresh, held, *svc.seen.values()):
        assert token not in logs.text
