"""An EHR 5xx on an admin call a person waits on answers the documented ``503 ehr_unavailable`` within a few
seconds (a short retry budget), not ``fhir_error`` after the pipelines' 30 s of retries."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.auth_service.ehr import patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.test_flows_sandbox import connect, register

# ~2 s expected (one retry after at most 2 s); 12 leaves a busy CI machine room and stays far below the pipelines'
# retries this guards against (2 + 4 + 8 + 16 s, at least 24 s with jitter; Retry-After 120 s, more)
FEW_SECONDS = 12.0


@pytest.mark.parametrize(("kind", "retry_after"), [("500", None), ("503", "120"), ("503", None)])
def test_ehr_5xx_on_test_read_is_ehr_unavailable_quickly(
    make_settings: Any, sandbox: Any, kind: str, retry_after: str | None
) -> None:
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, f"i-{kind}-{retry_after}")) as svc:
        register(sandbox, svc, f"i-{kind}-{retry_after}", "public")
        conn_id = connect(sandbox, svc, f"i-{kind}-{retry_after}", pid)
        fault = {"kind": kind, "path": "/fhir/Patient", "times": None, "retry_after": retry_after}
        sandbox_admin(sandbox, "faults", fault)
        started = time.monotonic()
        r = svc.admin("GET", "/api/integrations/smart/test/patient", params={"connection_id": conn_id})
        elapsed = time.monotonic() - started
        assert (r.status_code, r.json()["error"]) == (503, "ehr_unavailable"), r.text
        assert elapsed < FEW_SECONDS, elapsed
        events = svc.admin("GET", "/api/integrations/admin/audit").json()
        read = next(e for e in events if e["action"] == "data.read")
        assert read["outcome"] == "failure"


def test_ehr_5xx_on_provider_test_is_ehr_unavailable_quickly(make_settings: Any, sandbox: Any) -> None:
    with running_service(make_settings, sandbox, smart_practice(sandbox, "probe-app")) as svc:
        sandbox_admin(sandbox, "faults", {"kind": "503", "path": "/fhir/.well-known", "times": None})
        started = time.monotonic()
        r = svc.admin("POST", "/api/integrations/admin/providers/smart/test")
        elapsed = time.monotonic() - started
        body = r.json()
        assert (r.status_code, body["error"]) == (503, "ehr_unavailable"), body
        step = {"ok": False, "error": "ehr_unavailable", "message": body["discovery"]["message"]}
        assert body["discovery"] == {**step, "retryAfterSeconds": 1}  # the sandbox's 503 says "Retry-After: 1"
        assert r.headers["Retry-After"] == "1"
        assert body["patient_read"]["error"] == "not_connected"
        assert elapsed < FEW_SECONDS, elapsed
        events = svc.admin("GET", "/api/integrations/admin/audit").json()
        probe = next(e for e in events if e["action"] == "provider.test")
        assert probe["outcome"] == "failure" and probe["detail"]["discovery_error"] == "ehr_unavailable"
