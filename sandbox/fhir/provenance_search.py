"""``GET /fhir/Provenance?target=`` (DWB-82): the Provenances POSTed here that point at a resource, when the sandbox
offers it (``provenance_search``, with ``provenance_create``): what an EHR that lets a client find its own
Provenance answers. Off, Provenance is create-only (404 for a search, as for any type the sandbox does not serve).

``target`` matches a reference exactly or any of its versions (``DocumentReference/1`` finds
``DocumentReference/1/_history/2``); without it every Provenance is listed (a server ignoring the parameter). One page.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sandbox.fhir.access import bearer
from sandbox.fhir.permission import permission
from sandbox.fhir.responses import FhirFailure, fhir_response
from sandbox.state import get_state

__all__ = ["router"]

router = APIRouter()


def _points_at(resource: dict[str, Any], target: str) -> bool:
    refs = [str(t.get("reference", "")) for t in resource.get("target") or [] if isinstance(t, dict)]
    return any(r == target or r.startswith(f"{target}/_history/") for r in refs)


@router.get("/fhir/Provenance", response_model=None)
def search_provenance(request: Request) -> Response:
    st = get_state(request)
    if not (st.settings.provenance_create and st.settings.provenance_search):
        raise FhirFailure(404, "not-supported", "resource type 'Provenance' is not supported")
    permission(bearer(st, request), "Provenance", "s")
    target = request.query_params.get("target")
    found = [r for r in st.store.orphan_resources(["Provenance"]) if target is None or _points_at(r, target)]
    base = st.fhir_base(request)
    return fhir_response(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "link": [{"relation": "self", "url": str(request.url)}],
            "entry": [
                {"fullUrl": f"{base}/Provenance/{r['id']}", "resource": r, "search": {"mode": "match"}} for r in found
            ],
        }
    )
