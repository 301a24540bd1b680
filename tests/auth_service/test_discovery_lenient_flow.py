"""SAL-02/SAL-04 leniency end to end: with a smart-configuration lacking its endpoints and grant types, a
patient still connects (endpoints from the CapabilityStatement's oauth-uris) and the log says why."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.auth_service.ehr import patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.test_flows_sandbox import connect, register


def test_connect_with_incomplete_smart_configuration(
    make_settings: Any, sandbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    dropped = ["token_endpoint", "authorization_endpoint", "grant_types_supported"]
    sandbox_admin(sandbox, "settings", {"drop_smart_fields": dropped})
    pid = patient_ids(sandbox)[0]
    with (
        caplog.at_level(logging.WARNING, logger="connectors.smart.discovery"),
        running_service(make_settings, sandbox, smart_practice(sandbox, "lenient-app")) as svc,
    ):
        register(sandbox, svc, "lenient-app", "public")
        conn_id = connect(sandbox, svc, "lenient-app", pid)
        status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
        assert status["status"] == "active" and status["patient"] == pid
        refreshed = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert refreshed.status_code == 200, refreshed.text
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("falling back to the CapabilityStatement oauth-uris" in m for m in warned), warned
