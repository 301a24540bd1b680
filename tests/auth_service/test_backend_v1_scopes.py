"""SMART Backend Services against a SMART v1 server (SAL-20, SAL-32): the client_credentials scope is asked in v1
spelling (``system/*.read``), as a patient launch's is, since a v1 server knows no ``.rs`` and refuses it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sandbox import SandboxConfig, SandboxServer
from tests.auth_service.ehr import running_service, smart_practice
from tests.auth_service.test_flows_sandbox import register


@contextmanager
def _v1_backend(make_settings: Any, client_id: str) -> Iterator[tuple[Any, Any]]:
    """A SMART v1 sandbox and the auth service, ``client_id`` registered there as a backend client."""
    with (
        SandboxServer(SandboxConfig(patients=2, seed=5, profile="v1")) as v1,
        running_service(make_settings, v1, smart_practice(v1, client_id)) as svc,
    ):
        jwks = f"{svc.base_url}/api/integrations/ehr/jwks"
        register(v1, svc, client_id, "backend", jwks_url=jwks, allowed_scopes="system/*.read")
        svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"kid": svc.ctx.settings.EHR_JWT_KEY_ID})
        yield v1, svc


def test_sal20_sal32_backend_scope_is_asked_in_v1_spelling_of_a_v1_server(make_settings) -> None:
    with _v1_backend(make_settings, "v1-bulk") as (_, svc):
        body = {"provider": "smart", "scope": "system/Patient.rs system/Observation.rs"}
        r = svc.admin("POST", "/api/integrations/admin/backend-connections", json=body)
        assert r.status_code == 201, r.text  # before: 409 client_grant_refused (invalid_scope for ".rs")
        assert set(r.json()["granted_scopes"].split()) == {"system/Patient.read", "system/Observation.read"}
        events = svc.admin("GET", "/api/integrations/admin/audit").json()
        created = next(e for e in events if e["action"] == "backend.create")
        assert created["detail"]["asked_scope"] == "system/Patient.read system/Observation.read"
        refreshed = svc.admin(
            "POST", "/api/integrations/smart/refresh", json={"connection_id": r.json()["connection_id"]}
        )
        assert refreshed.status_code == 200, refreshed.text  # the next mint asks the granted v1 scope again


def test_sal20_sal32_a_granular_backend_scope_is_refused_not_widened_for_a_v1_server(make_settings) -> None:
    """v1 scopes have no filters: ``system/Observation.rs?category=…|laboratory`` would be asked (and granted) as
    ``system/Observation.read``, every Observation, wider than the admin asked. Refused (400 naming the scope and what
    v1 could ask) before any token call, audited; before, the connection was created with the whole type."""
    lab = "system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    with _v1_backend(make_settings, "v1-lab") as (v1, svc):
        body = {"provider": "smart", "scope": f"system/Patient.rs {lab}"}
        r = svc.admin("POST", "/api/integrations/admin/backend-connections", json=body)
        assert r.status_code == 400, r.text  # before: 201, granted "system/Patient.read system/Observation.read"
        assert r.json()["error"] == "invalid_request" and lab in r.json()["message"], r.text
        assert "system/Observation.read" in r.json()["message"]
        assert svc.admin("GET", "/api/integrations/smart/status").status_code == 404  # nothing kept
        events = svc.admin("GET", "/api/integrations/admin/audit").json()
        failed = next(e for e in events if e["action"] == "backend.create")
        assert failed["outcome"] == "failure" and failed["detail"]["error_code"] == "invalid_request"
        issued = [rec for rec in v1.state.auth.tokens.values() if rec.client_id == "v1-lab"]
        assert not issued  # no token was asked for
