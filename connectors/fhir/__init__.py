"""FHIR R4 REST client (search paging, read, create, download) and the synced resource types."""

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
