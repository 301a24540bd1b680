"""Services raise typed errors and never import HTTP; the API alone turns each one into a status and a body."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from auth_service.api.errors import ERROR_CODES, ApiError, install_error_handlers
from auth_service.services import errors as se
from connectors import errors as ce

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "auth_service" / "services"
HTTP_MODULES = ("fastapi", "starlette", "auth_service.api")


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(SERVICES.rglob("*.py")), ids=lambda p: p.name)
def test_services_import_no_http_layer(path: Path) -> None:
    imported = _imported(ast.parse(path.read_text(), str(path)))
    http = sorted(n for n in imported if any(n == m or n.startswith(m + ".") for m in HTTP_MODULES))
    assert not http, f"{path.name} imports {http}: raise a ServiceError and let auth_service/api map it"


def _subclasses(cls: type[se.ServiceError]) -> list[type[se.ServiceError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found


@pytest.mark.parametrize("cls", _subclasses(se.ServiceError)[1:], ids=lambda c: c.__name__)
def test_every_service_error_code_has_a_status(cls: type[se.ServiceError]) -> None:
    assert cls.all_codes() <= set(ERROR_CODES), cls.all_codes() - set(ERROR_CODES)


def test_every_code_is_documented() -> None:
    text = (ROOT / "docs" / "TROUBLESHOOTING.md").read_text()
    assert [code for code in ERROR_CODES if f"`{code}`" not in text] == []


def test_a_code_outside_the_class_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot carry"):
        se.NotFoundError("x", code="invalid_state")
    with pytest.raises(ValueError, match="cannot carry"):
        ApiError("no_such_code", "x")


_WRITE = ce.WriteNotSupportedError("vendor_disabled", "writes are off for this vendor")

# error raised by a service -> (HTTP status, the JSON body the client gets)
CASES: list[tuple[ce.EhrSyncError, int, dict[str, Any]]] = [
    (se.InvalidInputError("give 'patient'"), 400, {"error": "invalid_request", "message": "give 'patient'"}),
    (se.IssuerRefusedError("not allowed"), 400, {"error": "invalid_issuer", "message": "not allowed"}),
    (se.StateRefusedError("state expired"), 400, {"error": "invalid_state", "message": "state expired"}),
    (se.NotFoundError("no such sync"), 404, {"error": "not_found", "message": "no such sync"}),
    (
        se.NotFoundError("no connection", code="not_connected"),
        404,
        {"error": "not_connected", "message": "no connection"},
    ),
    (se.ProviderUnusableError("off"), 409, {"error": "provider_disabled", "message": "off"}),
    (
        se.ProviderUnusableError("no client id", code="configuration_error"),
        409,
        {"error": "configuration_error", "message": "no client id"},
    ),
    (
        se.ConfigValidationError("invalid", fields=[{"field": "client_id"}]),
        422,
        {"error": "validation_error", "message": "invalid", "fields": [{"field": "client_id"}]},
    ),
    (
        se.ConnectionUnusableError("needs_reauth"),
        409,
        {"error": "needs_reauth", "message": "connection is needs_reauth"},
    ),
    (se.ConnectionUnusableError("disabled"), 409, {"error": "needs_reauth", "message": "connection is disabled"}),
    (
        se.ConnectionUnusableError("client_rejected"),
        409,
        {"error": "client_rejected", "message": "connection is client_rejected"},
    ),
    (
        se.ConnectionUnusableError("token_undecryptable"),
        409,
        {"error": "token_undecryptable", "message": "connection is token_undecryptable"},
    ),
    (
        se.ConnectionInactiveError("needs_reauth"),
        409,
        {
            "error": "connection_inactive",
            "message": "connection is needs_reauth; it must be active to sync (the patient must authorize again)",
            "connectionStatus": "needs_reauth",
        },
    ),
    (
        se.ConnectionInactiveError("client_rejected"),
        409,
        {
            "error": "connection_inactive",
            "message": "connection is client_rejected; it must be active to sync (the EHR refused the practice's app: "
            "an admin must fix its registration or credentials and retry it; the patient need not authorize again)",
            "connectionStatus": "client_rejected",
        },
    ),
    (
        se.SyncInProgressError("run-1"),
        409,
        {
            "error": "sync_in_progress",
            "message": "a sync of this connection is already queued or running",
            "syncId": "run-1",
        },
    ),
    (se.SyncRefusedError("flag off"), 409, {"error": "bulk_not_enabled", "message": "flag off"}),
    (
        se.SyncRefusedError("refused", code="orchestrator_rejected"),
        502,
        {"error": "orchestrator_rejected", "message": "refused"},
    ),
    (
        se.SyncRefusedError("down", code="orchestrator_unavailable"),
        503,
        {"error": "orchestrator_unavailable", "message": "down"},
    ),
    (
        se.AuthorizationRefusedError("no", code="access_denied", ehr_error="access_denied", ehr_error_description=None),
        403,
        {"error": "access_denied", "message": "no", "ehr_error": "access_denied", "ehr_error_description": None},
    ),
    (se.AuthorizationRefusedError("odd"), 502, {"error": "authorize_failed", "message": "odd"}),
    (
        se.EhrCallError("down", code="ehr_unavailable", ok=False),
        503,
        {"error": "ehr_unavailable", "message": "down", "ok": False},
    ),
    (ApiError("unauthorized", "send an API key"), 401, {"error": "unauthorized", "message": "send an API key"}),
    # connector errors that reach a route leave under their documented code
    (
        _WRITE,
        409,
        {
            "error": "write_not_supported",
            "message": str(_WRITE),
            "reason": "vendor_disabled",
            "tenant": None,
            "vendor": None,
            "code": "WRITE_NOT_SUPPORTED",
        },
    ),
    (ce.NeedsReauthError("refresh refused"), 409, {"error": "needs_reauth", "message": "refresh refused"}),
    (
        ce.DiscoveryError("no smart-configuration"),
        502,
        {"error": "discovery_failed", "message": "no smart-configuration"},
    ),
    (ce.SecurityPolicyError("foreign host"), 400, {"error": "invalid_issuer", "message": "foreign host"}),
    (ce.TransportError("timed out"), 503, {"error": "ehr_unavailable", "message": "timed out"}),
    (ce.ConfigurationError("bad key"), 409, {"error": "configuration_error", "message": "bad key"}),
    (ce.EhrSyncError("something else"), 502, {"error": "fhir_error", "message": "something else"}),
]


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{index}")
    def raise_case(index: int) -> None:
        raise CASES[index][0]

    return TestClient(app)


@pytest.mark.parametrize("index", range(len(CASES)), ids=lambda i: f"{type(CASES[i][0]).__name__}:{CASES[i][0].code}")
def test_error_to_status_and_body(client: TestClient, index: int) -> None:
    _, status, body = CASES[index]
    response = client.get(f"/raise/{index}")
    assert (response.status_code, response.json()) == (status, body)
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("exc", "code", "details"),
    [
        (ce.InvalidClientError("invalid_client", "unknown client"), "invalid_client", {}),
        (ce.InvalidGrantError("invalid_grant", "code used"), "invalid_grant", {}),
        (ce.InvalidScopeError("invalid_scope", "too much"), "scope_denied", {}),
        (ce.AccessDeniedError("access_denied", "no"), "access_denied", {}),
        (ce.TemporarilyUnavailableError("temporarily_unavailable", "busy"), "ehr_unavailable", {}),
        (ce.InvalidRequestError("invalid_request", "odd"), "token_exchange_failed", {}),
        (ce.FhirForbiddenError("forbidden", 403), "scope_denied", {}),
        (ce.FhirUnauthorizedError("unauthorized", 401), "needs_reauth", {}),
        (ce.FhirServerError("busy", 503), "ehr_unavailable", {}),
        (ce.FhirNotFoundError("gone", 404), "fhir_error", {"upstream_status": 404}),
    ],
)
def test_connector_errors_get_their_documented_code(exc: ce.EhrSyncError, code: str, details: dict[str, Any]) -> None:
    error = se.service_error_from(exc)
    assert (error.code, error.details) == (code, details)
    assert error.message == ("access not granted at the EHR" if code == "access_denied" else str(exc))
    assert se.service_error_from(error) is error
