"""SAL-03/SAL-04/SAL-20: a SMART App Launch 1.0 server publishes a well-known file of 1.0 shape beside its
CapabilityStatement (1.0 required both). The file has no ``grant_types_supported`` nor
``code_challenge_methods_supported`` (required only since 2.0) and its capabilities name no ``permission-v2``. Such a
server is SMART v1 as much as one with no well-known file: PKCE is not advertised (ehrsync still sends S256) and
scopes are asked in v1 spelling. Before, the file's ``capabilities`` made it count as 2.x: every patient launch was
refused "code_challenge_methods_supported lacks S256", and v2 scopes would have followed."""

from __future__ import annotations

from typing import Any

import httpx

from sandbox import SandboxConfig, SandboxServer
from tests.auth_service.ehr import patient_ids, running_service, smart_practice
from tests.auth_service.test_flows_sandbox import connect, register


def test_sal04_sal20_a_smart_1_server_with_its_well_known_file_connects_in_v1(make_settings: Any) -> None:
    with SandboxServer(SandboxConfig(patients=2, seed=4, profile="v1_well_known")) as v1:
        doc = httpx.get(v1.fhir_base + "/.well-known/smart-configuration", timeout=10).json()
        assert "capabilities" in doc and "grant_types_supported" not in doc  # the 1.0 shape, not SAL-04's 404
        pid = patient_ids(v1)[0]
        with running_service(make_settings, v1, smart_practice(v1, "v1-doc-app")) as svc:
            register(v1, svc, "v1-doc-app", "public")
            conn_id = connect(v1, svc, "v1-doc-app", pid)
            status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
            assert status["status"] == "active" and status["patient"] == pid
            assert status["smart_v1"] is True
            events = svc.admin("GET", "/api/integrations/admin/audit").json()
            asked = next(e for e in events if e["action"] == "authorize.start")["detail"]["scope"]
            assert "patient/*.read" in asked.split() and ".rs" not in asked
