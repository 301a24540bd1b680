"""Epic: per-organization base URLs, private_key_jwt with a hosted JWKS, Observation category fan-out.

Facts from /work/shared/conformance/vendors.md §2 and draft-note §7 ([verify] items noted inline).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from connectors.providers.base import ProviderPlugin
from connectors.providers.config import EpicConfig, ProviderConfig
from connectors.providers.profiles import (
    AuthMethod,
    BulkSupport,
    RateLimit,
    RefreshPolicy,
    ScopeStyle,
    WriteProfile,
)
from connectors.smart.scopes import ScopeSet

__all__ = ["OBSERVATION_CATEGORIES", "EpicProvider", "granted_categories"]

# Epic rejects Observation searches without a category or code [doc]; these cover what ehrsync syncs.
OBSERVATION_CATEGORIES = ("laboratory", "vital-signs", "social-history")
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"


class EpicProvider(ProviderPlugin):
    id = "epic"
    display_name = "Epic"
    config_model = EpicConfig
    base_url_template = (
        "{fhirBaseUrl}  (per organization, e.g. https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4)"
    )
    discovery_quirks = (
        "production bases come from Epic's endpoint directory; never derive one organization's base from another",
        "granted APIs follow the app registration, not the requested scope string; 403 bodies may be empty",
    )
    auth_methods = (
        AuthMethod("private_key_jwt", ("RS384", "ES384"), "client_credentials"),
        AuthMethod("private_key_jwt", ("RS384", "ES384"), "authorization_code"),
        AuthMethod("client_secret_basic", (), "authorization_code"),
    )
    token_ttl_hint = 3600
    refresh_policy = RefreshPolicy.ROTATE
    scope_style = ScopeStyle.V2
    required_search_params = {"Observation": (("patient", "category"), ("patient", "code"))}
    last_updated_types = frozenset()  # per resource at best: trust only the CapabilityStatement [verify]
    bulk = BulkSupport.GROUP
    rate_limit = RateLimit(10, 1.0, "fhir-base", False, "ehrsync default (Epic publishes no number) [verify]")
    write_profile = WriteProfile(
        supported=True,
        doc_status_by_persona={
            "user": frozenset({"preliminary", "final"}),
            "system": frozenset({"preliminary", "final"}),
        },
        mime_types=frozenset({"text/plain"}),
        encounter_required=True,
        conditional_create=False,
        author_rule="optional; without author the note files under the app's background user",
        max_bytes=1_000_000,
        inline_only=True,  # text/plain as base64 data only (draft-note §7 [3p]): never a Binary referenced by url
        notes="status must be current; only the first attachment is kept; no If-None-Exist [3p][verify]",
    )
    docs_checked_on = dt.date(2026, 11, 25)

    def search_plans(
        self,
        resource_type: str,
        patient_id: str | None,
        *,
        config: ProviderConfig | Mapping[str, Any] | None = None,
        granted: ScopeSet | None = None,
    ) -> list[dict[str, str]]:
        """Observation fans out per category, over the categories the granted scopes cover only: each is its
        own Epic API, and one not on the app answers 403 (vendors.md §2: the grant, not the request, decides)."""
        plans = super().search_plans(resource_type, patient_id, config=config, granted=granted)
        if resource_type != "Observation":
            return plans
        if patient_id is None:
            raise ValueError("Epic Observation search needs a patient (patient + category); use Bulk for populations")
        categories = granted_categories(granted, resource_type, OBSERVATION_CATEGORIES)
        return [{**plan, "category": category} for plan in plans for category in categories]


def granted_categories(granted: ScopeSet | None, resource_type: str, categories: tuple[str, ...]) -> tuple[str, ...]:
    """The ``categories`` a read/search scope of ``resource_type`` covers: all of them for an unfiltered scope
    (or unknown scopes), else those named by granular ``?category=`` scopes (SAL-18; ``system|code`` or ``code``).
    A granular scope filtering on anything besides the category covers none: its searches would be refused."""
    if granted is None:
        return categories
    filter_sets = granted.filters_for(resource_type, "search") + granted.filters_for(resource_type, "read")
    if any(not filters for filters in filter_sets):
        return categories
    covered: set[str] = set()
    for filters in filter_sets:
        if all(name == "category" for name, _ in filters):
            covered.update(_category_code(value) for _, value in filters)
    return tuple(c for c in categories if c in covered)


def _category_code(value: str) -> str:
    system, _, code = value.rpartition("|")
    return code if system in ("", OBSERVATION_CATEGORY_SYSTEM) else ""
