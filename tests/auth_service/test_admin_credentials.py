"""Admin API keys over a real socket: conflicting ``Authorization`` and ``X-API-Key`` headers are refused."""

from __future__ import annotations

from typing import Any

import httpx

from tests.auth_service.ehr import running_service, smart_practice

STATUS = "/api/integrations/admin/audit"


def test_conflicting_bearer_and_x_api_key_are_refused(make_settings: Any, sandbox: Any) -> None:
    with running_service(make_settings, sandbox, smart_practice(sandbox, "cred-app")) as svc:
        url = svc.base_url + STATUS
        good = svc.api_key
        both_same = httpx.get(url, headers={"Authorization": f"Bearer {good}", "X-API-Key": good}, timeout=10)
        assert both_same.status_code == 200, both_same.text
        for other in ("not-a-key", good + "x"):
            for headers in (
                {"Authorization": f"Bearer {good}", "X-API-Key": other},
                {"Authorization": f"Bearer {other}", "X-API-Key": good},
            ):
                r = httpx.get(url, headers=headers, timeout=10)
                assert r.status_code == 400 and r.json()["error"] == "conflicting_credentials", r.text
        repeated = httpx.get(url, headers=[("X-API-Key", good), ("X-API-Key", "another")], timeout=10)
        assert repeated.status_code == 400 and repeated.json()["error"] == "conflicting_credentials"
        assert httpx.get(url, headers={"X-API-Key": good}, timeout=10).status_code == 200
        assert httpx.get(url, headers={"Authorization": f"Bearer {good}"}, timeout=10).status_code == 200
