"""SMART discovery documents and the CapabilityStatement (SAL-01..04)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from sandbox.data.ids import ALL_TYPES
from sandbox.data.timefmt import instant_of
from sandbox.fhir.capability_variants import apply_variants
from sandbox.fhir.responses import fhir_response, outcome_body
from sandbox.fhir.smart_v1_document import smart_1_document
from sandbox.state import SandboxState, get_state

router = APIRouter()
WRITABLE = ("DocumentReference", "Binary")
_SEARCH_PARAMS = ("_id", "_lastUpdated", "patient", "subject", "category", "_count", "_sort", "_elements")
_PARAM_TYPES = {"_lastUpdated": "date", "date": "date", "encounter": "reference"}


def smart_configuration(st: SandboxState, base: str) -> dict[str, Any]:
    fhir_base = base + "/fhir"
    doc: dict[str, Any] = {
        "issuer": st.settings.smart_issuer or fhir_base,
        "jwks_uri": jwks_uri(st, base),
        "authorization_endpoint": base + "/oauth/authorize",
        "token_endpoint": base + "/oauth/token",
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"]
        + (["client_secret_post"] if st.settings.accept_client_secret_post else []),
        "token_endpoint_auth_signing_alg_values_supported": list(st.settings.assertion_algs),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "scopes_supported": [
            "openid",
            "fhirUser",
            "launch",
            "launch/patient",
            "offline_access",
            "online_access",
            "patient/*.rs",
            "user/*.rs",
            "system/*.rs",
            "patient/*.read",
            "user/*.read",
            "system/*.read",
        ],
        "response_types_supported": ["code"],
        "capabilities": [
            "launch-ehr",
            "launch-standalone",
            "client-public",
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "context-passthrough-banner",
            "context-ehr-patient",
            "context-ehr-encounter",
            "context-standalone-patient",
            "permission-offline",
            "permission-online",
            "permission-patient",
            "permission-user",
            "permission-v1",
            "permission-v2",
            "sso-openid-connect",
        ],
        "code_challenge_methods_supported": ["S256"],
        "revocation_endpoint": base + "/oauth/revoke",
        "introspection_endpoint": base + "/oauth/introspect",
        "management_endpoint": base + "/oauth/manage",
    }
    for field in st.settings.drop_smart_fields:
        doc.pop(field, None)
    doc.update(dict.fromkeys(st.settings.blank_smart_fields, ""))
    return doc


@router.get("/fhir/.well-known/smart-configuration", response_model=None)
def well_known(request: Request) -> Response:
    st = get_state(request)
    if st.settings.profile == "v1":
        return fhir_response(outcome_body("not-found", "SMART v1 server: see the CapabilityStatement"), 404)
    doc = smart_configuration(st, st.base(request))
    shaped = smart_1_document(doc) if st.settings.profile == "v1_well_known" else doc
    return JSONResponse({**shaped, **dict.fromkeys(st.settings.null_smart_fields)})


def jwks_uri(st: SandboxState, base: str) -> str:
    """Where the keys are published (``jwks_moved``: a server that moved them)."""
    return base + ("/oauth/keys" if st.settings.jwks_moved else "/oauth/jwks")


@router.get("/fhir/.well-known/openid-configuration", response_model=None)
def openid_configuration(request: Request) -> Response:
    st = get_state(request)
    if not st.settings.openid_configuration:
        return JSONResponse({"error": "not found"}, status_code=404)
    base = st.base(request)
    return JSONResponse(
        {
            "issuer": base + "/fhir",
            "jwks_uri": jwks_uri(st, base),
            "authorization_endpoint": base + "/oauth/authorize",
            "token_endpoint": base + "/oauth/token",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }
    )


def _provenance_entry(st: SandboxState) -> list[dict[str, Any]]:
    """Provenance is create-only here (DWB-82): accepted and stored, never generated; searched by ``target`` only
    with ``provenance_search`` (sandbox.fhir.provenance_search)."""
    if not (st.settings.write_enabled and st.settings.provenance_create):
        return []
    if not st.settings.provenance_search:
        return [{"type": "Provenance", "interaction": [{"code": "create"}]}]
    searched = [{"code": "create"}, {"code": "search-type"}]
    return [{"type": "Provenance", "interaction": searched, "searchParam": [{"name": "target", "type": "reference"}]}]


def _resource_entry(
    rtype: str, write: bool, conditional: bool = True, doc_params: Sequence[str] = ()
) -> dict[str, Any]:
    """``doc_params``: DocumentReference's own parameters declared (``document_search_params``, DWB-32)."""
    interactions = [{"code": "read"}, {"code": "search-type"}]
    if write and rtype in WRITABLE:
        interactions.append({"code": "create"})
    names = [*_SEARCH_PARAMS, *(doc_params if rtype == "DocumentReference" else ())]
    entry: dict[str, Any] = {
        "type": rtype,
        "interaction": interactions,
        "searchParam": [{"name": n, "type": _PARAM_TYPES.get(n, "token")} for n in names],
    }
    if write and rtype in WRITABLE:
        entry["conditionalCreate"] = conditional
    if rtype in ("Patient", "Group"):
        entry["operation"] = [
            {
                "name": "export",
                "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
                + ("patient-export" if rtype == "Patient" else "group-export"),
            }
        ]
    return entry


@router.get("/fhir/metadata", response_model=None)
def metadata(request: Request) -> Response:
    st = get_state(request)
    base = st.base(request)
    oauth_uris = {
        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
        "extension": [
            {"url": "authorize", "valueUri": base + "/oauth/authorize"},
            {"url": "token", "valueUri": base + "/oauth/token"},
            {"url": "revoke", "valueUri": base + "/oauth/revoke"},
            {"url": "introspect", "valueUri": base + "/oauth/introspect"},
        ],
    }
    service = {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}
        ]
    }
    cfg = st.settings
    body = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant_of(st.clock.now()),
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "software": {"name": "ehrsync sandbox"},
        "implementation": {"description": "ehrsync local SMART on FHIR sandbox", "url": base + "/fhir"},
        "rest": _rests(
            st,
            {
                "mode": "server",
                "security": {"service": [service], "extension": [oauth_uris]},
                "resource": [
                    _resource_entry(t, cfg.write_enabled, cfg.conditional_create, cfg.document_search_params)
                    for t in ALL_TYPES
                ]
                + _provenance_entry(st),
                "operation": [
                    {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}
                ],
            },
        ),
    }
    return fhir_response(apply_variants(body, st.settings.capability_variants))


def _rests(st: SandboxState, server: dict[str, Any]) -> list[dict[str, Any]]:
    """``rest`` as ``capability_rests`` lays it out: the server entry alone, after a client one, or before a second
    server entry describing every type read and search only (the writes this sandbox takes are the first's)."""
    layout = st.settings.capability_rests
    if layout == "client_first":
        return [{"mode": "client", "resource": [_resource_entry(t, False) for t in ALL_TYPES]}, server]
    if layout == "read_only_after":
        return [server, {"mode": "server", "resource": [_resource_entry(t, False) for t in ALL_TYPES]}]
    return [server]
