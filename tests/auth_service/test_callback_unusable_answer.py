"""The first code exchange is answered 200 with a body ehrsync cannot use (SAL-15, SAL-34), over real sockets (the
sandbox's ``token_answer`` fault: the grant happened, its tokens are live at the EHR, the answer is broken).

Before, the patient got the error page but the tokens the answer carried were neither kept nor revoked: a live grant
at the EHR that nobody held. Now whatever token the answer did carry is revoked at the EHR's revocation endpoint
(best effort, as tokens that failed to be stored are: ``unstored_tokens``), the page names the problem, and no token
reaches the logs."""

from __future__ import annotations

import html
import uuid
from typing import Any

import pytest

from tests.auth_service.ehr import authorize_headless, patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.logcapture import capture_all_logs
from tests.auth_service.test_flows_sandbox import register

LOGIN = "/api/integrations/smart/login?tenant=t1&provider=smart"
HTML = {"Accept": "text/html"}
#: the fault's variant -> what the page must name
PROBLEMS = {
    "no_token_type": "unsupported token_type None (expected Bearer)",
    "no_access_token": "token response lacks 'access_token'",
    "access_token_number": "token response lacks 'access_token'",
}


def _issued(sandbox: Any, client_id: str) -> dict[str, tuple[str, bool]]:
    """Every token the sandbox issued to ``client_id``: its kind and whether it was revoked."""
    with sandbox.state.auth.lock:
        return {
            t: (rec.kind, rec.revoked) for t, rec in sandbox.state.auth.tokens.items() if rec.client_id == client_id
        }


@pytest.mark.parametrize("variant", sorted(PROBLEMS))
def test_sal15_sal34_an_unusable_first_token_answer_is_refused_clearly_and_its_tokens_revoked(
    make_settings: Any, sandbox: Any, variant: str
) -> None:
    client_id = f"unusable-first-{uuid.uuid4().hex[:8]}"
    pid = patient_ids(sandbox)[1]
    with (
        capture_all_logs() as logs,
        running_service(make_settings, sandbox, smart_practice(sandbox, client_id)) as svc,
    ):
        register(sandbox, svc, client_id, "public")
        sandbox_admin(sandbox, "preapprove", {"client_id": client_id, "patient_id": pid})
        sandbox_admin(sandbox, "faults", {"kind": "token_answer", "path": "/oauth/token", "error": variant})
        page = authorize_headless(svc, svc.base_url + LOGIN, headers=HTML)
        assert page.status_code == 502, page.text[:800]
        shown = html.unescape(page.text)
        assert "token_exchange_failed" in shown and PROBLEMS[variant] in shown, shown[-800:]
        assert "the token endpoint's HTTP 200 answer is unusable" in shown
        assert svc.admin("GET", "/api/integrations/smart/status").status_code == 404  # no connection kept
        events = svc.admin("GET", "/api/integrations/admin/audit").json()
        failed = next(e for e in events if e["action"] == "authorize.complete")
        assert failed["outcome"] == "failure" and failed["detail"]["error_code"] == "token_exchange_failed"
    issued = _issued(sandbox, client_id)
    assert sorted(kind for kind, _ in issued.values()) == ["access", "refresh"]
    assert all(revoked for _, revoked in issued.values()), issued.values()  # before: both still live at the EHR
    assert "revoked at the EHR" in logs.text and "Traceback" not in logs.text
    for token in (*issued, svc.seen["code"]):
        assert token not in logs.text and token not in page.text
