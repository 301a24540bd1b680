"""Every OAuth error the EHR redirects back to the callback maps to one documented code (SAL-36), the
EHR's sanitized ``error_description`` reaches the admin and the audit, and no token call is made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auth_service.api.errors import ERROR_CODES
from auth_service.services.callback_errors import DESCRIPTION_CAP
from tests.auth_service.ehr import authorize_headless, patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.test_flows_sandbox import register

LOGIN = "/api/integrations/smart/login?tenant=t1&provider=smart"
TROUBLESHOOTING = Path(__file__).resolve().parents[2] / "docs" / "TROUBLESHOOTING.md"

CASES = [
    ("invalid_client", "invalid_client", 502),
    ("invalid_request", "authorize_invalid_request", 502),
    ("unauthorized_client", "unauthorized_client", 502),
    ("unsupported_response_type", "unsupported_response_type", 502),
    ("invalid_scope", "scope_denied", 403),
    ("access_denied", "access_denied", 403),
    ("server_error", "ehr_unavailable", 503),
    ("temporarily_unavailable", "ehr_unavailable", 503),
    ("vendor_specific_thing", "authorize_failed", 502),
]


@pytest.mark.parametrize(("ehr_error", "code", "status"), CASES)
def test_sal36_callback_oauth_error_maps_to_documented_code(
    make_settings: Any, sandbox: Any, ehr_error: str, code: str, status: int
) -> None:
    pid = patient_ids(sandbox)[0]
    description = "Client\x00 is <b>not</b>\u202e registered\r\nfor this tenant " + "x" * 2000
    client_id = f"cb-{ehr_error.replace('_', '-')}"
    with running_service(make_settings, sandbox, smart_practice(sandbox, client_id)) as svc:
        register(sandbox, svc, client_id, "public")
        sandbox_admin(sandbox, "preapprove", {"client_id": client_id, "patient_id": pid})
        sandbox_admin(
            sandbox,
            "faults",
            {"kind": "oauth_error", "path": "/oauth/authorize", "error": ehr_error, "error_description": description},
        )
        # a token-endpoint fault that stays armed proves no token call was made
        sandbox_admin(sandbox, "faults", {"kind": "oauth_error", "path": "/oauth/token", "error": "invalid_grant"})
        r = authorize_headless(svc, svc.base_url + LOGIN)
        body = r.json()
        assert (r.status_code, body["error"]) == (status, code), body
        assert body["error"] != "token_exchange_failed"
        assert body["ehr_error"] == ehr_error
        shown = body["ehr_error_description"]
        assert shown.startswith("Client is not registered for this tenant x")
        assert len(shown) <= DESCRIPTION_CAP
        assert not any(c in shown for c in "\x00\u202e\r\n")
        assert shown in body["message"]
        armed = sandbox_admin(sandbox, "faults", method="GET")
        assert any(
            f["path"] == "/oauth/token" for f in (armed.get("faults", armed) if isinstance(armed, dict) else armed)
        )
        events = svc.admin("GET", "/api/integrations/admin/audit").json()
        failed = [e for e in events if e["action"] == "authorize.complete" and e["outcome"] == "failure"]
        assert len(failed) == 1
        assert failed[0]["detail"]["error_code"] == code
        assert failed[0]["detail"]["ehr_error"] == ehr_error
        assert failed[0]["detail"]["ehr_error_description"] == shown


def test_every_callback_code_is_documented() -> None:
    text = TROUBLESHOOTING.read_text()
    for _, code, status in CASES:
        assert ERROR_CODES[code] == status
        assert f"`{code}`" in text, code
