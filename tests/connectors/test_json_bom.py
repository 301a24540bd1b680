"""Every JSON answer of an EHR is read past a leading UTF-8 byte order mark (RFC 8259 §8.1: a parser MAY ignore one;
SAL-01 for the smart-configuration), over a real socket: the sandbox's ``bom`` fault puts ``EF BB BF`` before its own
answer, as .NET-based FHIR servers and gateways do. One shared reader strips it
(``connectors.transport.answers.json_text``), used by FHIR bodies (``loads_exact``), OperationOutcomes of error
answers (``operation_outcome_of``) and SMART/OAuth documents (``parse_json_body``). Bulk status and manifest pages
and NDJSON files are pinned in ``tests/engine`` (``test_bulk_status_proxy_page.py``, ``test_bulk_file_bytes.py``).

Before, orjson refused the mark ("BOM is not supported"): reads, searches and ``/metadata`` failed as "not JSON",
a token answer was ``invalid_response`` and a JWKS "unusable", a token error or an OperationOutcome lost its codes,
the smart-configuration was silently replaced by the CapabilityStatement's SMART v1 endpoints, and a created
resource's representation was dropped as unusable."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from connectors.errors import FhirNotFoundError, OAuthError
from connectors.fhir import FhirClient
from connectors.smart import JwtClientAuth, client_credentials_grant, discover
from connectors.smart.idtoken import JwksCache
from connectors.tokens import MintingTokenSource
from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.helpers import recording_policy
from tests.connectors.test_smart_bounds import _auth


def _fhir(ehr: SandboxServer) -> FhirClient:
    backend = BackendClient(ehr, scope="system/*.rs system/DocumentReference.c")
    return FhirClient(ehr.fhir_base, MintingTokenSource(backend.mint_with_expiry), retry=recording_policy([]))


def _grant(ehr: SandboxServer, scope: str = "system/*.rs") -> str:
    auth: JwtClientAuth = _auth(BackendClient(ehr))
    with httpx.Client() as http:
        return client_credentials_grant(f"{ehr.base_url}/oauth/token", http=http, client_auth=auth, scope=scope).scope


def _smart_configuration(ehr: SandboxServer) -> Any:
    with httpx.Client() as http:
        config = discover(ehr.fhir_base, http=http)
    return config.token_endpoint, config.smart_v1  # v1: the document was unusable, /metadata read instead


def _created(ehr: SandboxServer) -> Any:
    note = {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": f"Patient/{ehr.admin.patients()[0]}"},
        "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(b"note").decode()}}],
    }
    created = _fhir(ehr).create(note)
    return created.status, created.resource is not None and created.resource["id"] == created.id


def _not_found_outcome(ehr: SandboxServer) -> Any:
    with pytest.raises(FhirNotFoundError) as info:
        _fhir(ehr).read("Patient", f"gone-{uuid.uuid4().hex[:8]}")
    return [issue["code"] for issue in (info.value.operation_outcome or {}).get("issue", [])]


def _token_error(ehr: SandboxServer) -> Any:
    with pytest.raises(OAuthError) as info:
        _grant(ehr, scope="bogus/scope")
    return info.value.error


def _jwks(ehr: SandboxServer) -> Any:
    with httpx.Client() as http:
        return [key["kid"] for key in JwksCache().keys(f"{ehr.base_url}/oauth/jwks", http)]


#: name: (the path the fault answers with a BOM, the call, which returns what must not change)
READERS: dict[str, tuple[str, Callable[[SandboxServer], Any]]] = {
    "smart-configuration": ("/fhir/.well-known/smart-configuration", _smart_configuration),
    "metadata": ("/fhir/metadata", lambda ehr: _fhir(ehr).capabilities()["fhirVersion"]),
    "read": ("/fhir/Patient/", lambda ehr: _fhir(ehr).read("Patient", ehr.admin.patients()[0])["id"]),
    "search": (
        "/fhir/Patient",
        lambda ehr: sorted(r["id"] for p in _fhir(ehr).search_pages("Patient") for r in p.resources),
    ),
    "create": ("/fhir/DocumentReference", _created),
    "operation-outcome": ("/fhir/Patient/gone-", _not_found_outcome),
    "token": ("/oauth/token", _grant),
    "token-error": ("/oauth/token", _token_error),
    "jwks": ("/oauth/jwks", _jwks),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_a_json_answer_starting_with_a_byte_order_mark_reads_as_without_one(reader: str, ehr: SandboxServer) -> None:
    """The same answer with a BOM before it reads as without one: the smart-configuration (SAL-01) stays the
    document, not the SMART v1 fallback; bodies, error codes and keys are those of the plain answer."""
    path, call = READERS[reader]
    plain = call(ehr)
    ehr.admin.set_fault("bom", path=path, times=None)
    assert call(ehr) == plain


def test_the_bom_fault_puts_the_mark_before_the_answer_it_would_have_sent(ehr: SandboxServer) -> None:
    """What the test above relies on: status and body as without the fault, three bytes first, Content-Length to
    match."""
    url = f"{ehr.fhir_base}/.well-known/smart-configuration"
    plain = httpx.get(url)
    ehr.admin.set_fault("bom", path="/fhir/.well-known/")
    marked = httpx.get(url)
    assert marked.status_code == plain.status_code == 200
    assert marked.content == b"\xef\xbb\xbf" + plain.content
    assert marked.headers["content-length"] == str(len(marked.content))
