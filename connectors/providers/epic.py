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

__all__ = ["EpicProvider"]

# Epic rejects Observation searches without a category or code [doc]; these cover what ehrsync syncs.
OBSERVATION_CATEGORIES = ("laboratory", "vital-signs", "social-history")


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
        notes="status must be current; only the first attachment is kept; no If-None-Exist [3p][verify]",
    )
    docs_checked_on = dt.date(2026, 11, 25)

    def search_plans(
        self,
        resource_type: str,
        patient_id: str | None,
        *,
        config: ProviderConfig | Mapping[str, Any] | None = None,
    ) -> list[dict[str, str]]:
        plans = super().search_plans(resource_type, patient_id, config=config)
        if resource_type != "Observation":
            return plans
        if patient_id is None:
            raise ValueError("Epic Observation search needs a patient (patient + category); use Bulk for populations")
        return [{**plan, "category": category} for plan in plans for category in OBSERVATION_CATEGORIES]
