"""Whether a granular scope's filter (SMART v2 ``Type.c?param=value``) can cover a resource type ehrsync creates.

A filter limits a scope to the resources a search on it matches. A type lacking one of the filter's parameters has
no resource it matches, so a wildcard such as ``patient/*.c?category=clinical-note`` covers no Binary and no
Provenance (neither has ``category``): a create of one would only be refused 403. One rule, shared by the scopes a
launch asks for (``auth_service.services.write_scopes``) and the write gate reading the granted ones
(``connectors.writeback.gate``), so what is asked and what is sent never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from connectors.fhir.resource_types import COMMON_SEARCH_PARAMS

__all__ = ["filters_apply", "query_applies"]

#: FHIR R4 search parameters (space-separated) of each type ehrsync creates, besides those every resource has
_SEARCH_PARAMS: dict[str, str] = {
    "Binary": "",
    "DocumentReference": "authenticator author category contenttype custodian date description encounter event"
    " facility format identifier language location patient period related relatesto relation relationship"
    " security-label setting status subject type",
    "Provenance": "agent agent-role agent-type entity location patient recorded signature-type target when",
    "Patient": "active address address-city address-country address-postalcode address-state address-use birthdate"
    " death-date deceased email family gender general-practitioner given identifier language link name organization"
    " phone phonetic telecom",
}


def filters_apply(resource_type: str, names: Iterable[str]) -> bool:
    """Whether ``resource_type`` has every search parameter named (``category:text`` and the chained
    ``patient.name`` are ``category`` and ``patient``); a type not listed has only the common ones."""
    bare = {re.split(r"[:.]", name, maxsplit=1)[0] for name in names}
    return bare <= COMMON_SEARCH_PARAMS | set(_SEARCH_PARAMS.get(resource_type, "").split())


def query_applies(resource_type: str, query: str | None) -> bool:
    """``filters_apply`` for a scope's query string (``category=x&patient=y``; None or empty: no filter)."""
    return filters_apply(resource_type, (part.split("=", 1)[0] for part in (query or "").split("&") if part))
