"""FHIR R4 REST client (search paging, read, create, download) and the synced resource types."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from connectors.fhir._session import FhirSession, TokenRule
    from connectors.fhir.client import CreateResult, FhirClient, parse_location
    from connectors.fhir.download import Downloaded
    from connectors.fhir.resource_types import SYNCED_RESOURCE_TYPES, patient_search_param
    from connectors.fhir.search import SearchPage
    from connectors.http import CallBudget, RateLimiter, RetryPolicy, parse_retry_after

__all__ = [
    "SYNCED_RESOURCE_TYPES",
    "CallBudget",
    "CreateResult",
    "Downloaded",
    "FhirClient",
    "FhirSession",
    "RateLimiter",
    "RetryPolicy",
    "SearchPage",
    "TokenRule",
    "parse_location",
    "parse_retry_after",
    "patient_search_param",
]

# Each public name's module, imported on first use (``connectors.lazy_exports``).
_HOMES = {
    "FhirSession": "connectors.fhir._session",
    "TokenRule": "connectors.fhir._session",
    "CreateResult": "connectors.fhir.client",
    "FhirClient": "connectors.fhir.client",
    "parse_location": "connectors.fhir.client",
    "Downloaded": "connectors.fhir.download",
    "SYNCED_RESOURCE_TYPES": "connectors.fhir.resource_types",
    "patient_search_param": "connectors.fhir.resource_types",
    "SearchPage": "connectors.fhir.search",
    "CallBudget": "connectors.http",
    "RateLimiter": "connectors.http",
    "RetryPolicy": "connectors.http",
    "parse_retry_after": "connectors.http",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
