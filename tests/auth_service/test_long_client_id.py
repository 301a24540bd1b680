"""Client ids issued by registration endpoints can be multi-KB JWTs: a 4 KB one goes through the admin API,
the app database (SQLite and PostgreSQL), a full authorize + token exchange with the sandbox, and a refresh."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.auth_service.ehr import patient_ids, running_service, smart_practice
from tests.auth_service.test_flows_sandbox import connect, register


def _jwt_shaped_client_id(size: int) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    head = part({"alg": "RS256", "typ": "JWT"})
    body = part({"iss": "https://registration.example", "software_id": "ehrsync", "pad": "p" * size})
    token = f"{head}.{body}.{'s' * 342}"
    return token[: size - 2] + "Zz" if len(token) > size else token


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_4kb_client_id_authorizes_and_refreshes(make_settings: Any, sandbox: Any, backend: str, request: Any) -> None:
    client_id = _jwt_shaped_client_id(4096)
    assert len(client_id) >= 4096
    db = {} if backend == "sqlite" else {"DATABASE_URL": request.getfixturevalue("postgres_url")}
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "short-id-first"), **db) as svc:
        put = svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"clientId": client_id})
        assert put.status_code == 200, put.text[:500]
        shown = svc.admin("GET", "/api/integrations/admin/providers/smart").json()
        assert client_id in json.dumps(shown)
        # a vendor plugin validates its config with its schema: the same id must pass it
        generic = {"fhirBaseUrl": sandbox.fhir_base, "clientId": client_id}
        put_generic = svc.admin("PUT", "/api/integrations/admin/providers/generic", json=generic)
        assert put_generic.status_code == 200, put_generic.text[:500]
        register(sandbox, svc, client_id, "public")
        conn_id = connect(sandbox, svc, client_id, pid)
        status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": conn_id}).json()
        assert status["status"] == "active" and status["patient"] == pid
        assert status["fhir_user"]  # the id_token's aud (our 4 KB client id) was verified
        refreshed = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert refreshed.status_code == 200, refreshed.text[:500]
