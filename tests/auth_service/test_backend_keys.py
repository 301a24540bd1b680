"""Backend Services keys and audit: ``EHR_JWT_PRIVATE_KEY`` given as a path works in the auth service and in
the pipelines' token acquisition (README), and a failed backend-connection creation is audited (SAL-32)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.errors import ConfigurationError
from pipelines.resources import AppDatabaseResource
from tests.auth_service.ehr import running_service, smart_practice
from tests.auth_service.keyutil import rsa_pem
from tests.auth_service.test_flows_sandbox import register

BACKEND = "/api/integrations/admin/backend-connections"


def _create_backend(svc: Any, sandbox: Any, client_id: str) -> httpx.Response:
    register(
        sandbox,
        svc,
        client_id,
        "backend",
        jwks_url=f"{svc.base_url}/api/integrations/ehr/jwks",
        allowed_scopes="system/*.rs",
    )
    svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"kid": svc.ctx.settings.EHR_JWT_KEY_ID})
    response: httpx.Response = svc.admin("POST", BACKEND, json={"provider": "smart", "scope": "system/Patient.rs"})
    return response


def test_sal32_private_key_path_in_auth_service_and_pipelines(
    make_settings: Any, sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "ehr-signing-key.pem"
    key_file.write_text(rsa_pem())
    key_file.chmod(0o600)
    env = {"EHR_JWT_PRIVATE_KEY": str(key_file), "EHR_JWT_KEY_ID": "path-kid"}
    with running_service(make_settings, sandbox, smart_practice(sandbox, "path-key-app"), **env) as svc:
        created = _create_backend(svc, sandbox, "path-key-app")
        assert created.status_code == 201, created.text
        conn_id = created.json()["connection_id"]
        refreshed = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert refreshed.status_code == 200, refreshed.text
        # the pipelines build their vault from the environment: the same path must sign their assertions
        settings = svc.ctx.settings
        monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", settings.INTEGRATIONS_TOKEN_ENC_KEY.get_secret_value())
        monkeypatch.setenv("EHR_JWT_PRIVATE_KEY", str(key_file))
        resource = AppDatabaseResource(url=settings.DATABASE_URL)
        with resource.open() as db, httpx.Client(timeout=10) as http:
            vault = resource.vault(db, http)
            before = vault.get_access_token(conn_id)
            minted = vault.force_refresh(conn_id)
            assert minted and minted != before


def test_unreadable_key_path_is_a_configuration_error_naming_the_variable(
    make_settings: Any, sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text(rsa_pem())
    env = {"EHR_JWT_PRIVATE_KEY": str(key_file), "EHR_JWT_KEY_ID": "gone-kid"}
    with running_service(make_settings, sandbox, smart_practice(sandbox, "gone-key-app"), **env) as svc:
        conn_id = _create_backend(svc, sandbox, "gone-key-app").json()["connection_id"]
        settings = svc.ctx.settings
        monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", settings.INTEGRATIONS_TOKEN_ENC_KEY.get_secret_value())
        monkeypatch.setenv("EHR_JWT_PRIVATE_KEY", str(tmp_path / "moved.pem"))
        resource = AppDatabaseResource(url=settings.DATABASE_URL)
        with (
            resource.open() as db,
            httpx.Client(timeout=10) as http,
            pytest.raises(ConfigurationError, match="EHR_JWT_PRIVATE_KEY is neither PEM text nor a path"),
        ):
            resource.vault(db, http).force_refresh(conn_id)


def test_failed_backend_creation_is_audited(make_settings: Any, sandbox: Any) -> None:
    with running_service(make_settings, sandbox, smart_practice(sandbox, "never-registered")) as svc:
        svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"kid": svc.ctx.settings.EHR_JWT_KEY_ID})
        r = svc.admin("POST", BACKEND, json={"provider": "smart", "scope": "system/Patient.rs"})
        assert r.status_code == 409 and r.json()["error"] == "client_grant_refused", r.text  # unknown client
        assert r.json()["ehr_error"] == "invalid_client"
        events = svc.admin("GET", "/api/integrations/admin/audit").json()
        failed = [e for e in events if e["action"] == "backend.create"]
        assert len(failed) == 1 and failed[0]["outcome"] == "failure"
        assert failed[0]["detail"]["error_code"] == r.json()["error"]
        assert failed[0]["detail"]["asked_scope"] == "system/Patient.rs"
