"""Oracle Health (Cerner Millennium): tenant GUID in the base, v1 explicit scopes, keep the original
refresh token, 570 s tokens, Group-only bulk, ``docStatus=final`` only (no drafts via FHIR).

Facts from /work/shared/conformance/vendors.md §3 and draft-note §7.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from connectors.providers.base import ProviderPlugin
from connectors.providers.config import CernerConfig, ProviderConfig
from connectors.providers.profiles import (
    AuthMethod,
    BulkSupport,
    FieldHint,
    RateLimit,
    RefreshPolicy,
    ScopeStyle,
    WriteProfile,
)

__all__ = ["CernerProvider"]


class CernerProvider(ProviderPlugin):
    id = "cerner"
    display_name = "Oracle Health (Cerner Millennium)"
    config_model = CernerConfig
    base_url_template = "{fhirBaseUrl}/r4/{tenantId}"
    discovery_quirks = (
        "SMART v1 profile URLs carry the tenant: authorization.cerner.com/tenants/{tenant}/...",
        "resource ids are only meaningful together with the full tenant base",
        "date/period/_lastUpdated take at most two prefixed values; _lastUpdated cannot be combined with date",
    )
    auth_methods = (
        AuthMethod("client_secret_basic", (), "client_credentials"),
        AuthMethod("private_key_jwt", ("RS384", "ES384"), "client_credentials"),
        AuthMethod("client_secret_basic", (), "authorization_code"),
        AuthMethod("none", (), "authorization_code"),
    )
    token_ttl_hint = 570
    refresh_policy = RefreshPolicy.REUSE_ORIGINAL
    scope_style = ScopeStyle.V1
    wildcard_scopes = False  # system/Observation.read style, each resource listed explicitly, no * [doc]
    # CarePlan search needs patient + category (or _id alone) and supports only category assess-plan [doc]:
    # docs.oracle.com/en/industries/health/millennium-platform-apis/mfrap/op-careplan-get.html
    required_search_params = {"CarePlan": (("patient", "category"), ("_id",))}
    fixed_search_params = {"CarePlan": {"category": "assess-plan"}}
    last_updated_types = frozenset({"Observation", "DocumentReference", "DiagnosticReport", "Encounter", "Condition"})
    bulk = BulkSupport.GROUP
    # "_elements" and "patient" are experimental parameters Oracle's Bulk does not support [doc]:
    # docs.oracle.com/en/industries/health/millennium-platform-apis/mfbda/op-group-group_id-export-get.html
    bulk_member_params = False
    one_export_per_client = True  # one running Bulk job per client+tenant, a second kick-off answers 429 [doc]
    rate_limit = RateLimit(10, 1.0, "client+tenant", False, "ehrsync default (429 'throttled' documented, no number)")
    write_profile = WriteProfile(
        supported=True,
        doc_status_by_persona={"user": frozenset({"final"}), "system": frozenset({"final", "amended"})},
        mime_types=frozenset(
            {"text/plain", "text/html", "application/rtf", "application/xhtml+xml", "application/pdf"}
        ),
        encounter_required=False,
        conditional_create=False,
        author_rule="Practitioner only; under provider tokens only the signed-in user (none: the token's user)",
        author_is_token_user=frozenset({"user"}),
        max_bytes=None,
        charset_required=True,
        period_end_required=True,
        inline_only=True,
        drops_identifier=True,  # DWB-33: unsupported create fields are ignored [doc]; identifier not promised kept
        notes="status current only; one content entry with base64 data; 'preliminary' removed, so drafts are "
        "blocked [doc]",
    )
    docs_checked_on = dt.date(2026, 11, 25)
    extra_field_hints = {
        "fhirBaseUrl": FieldHint(
            "FHIR host", "Oracle Health FHIR host without /r4/{tenant}.", False, "https://fhir-ehr.cerner.com"
        ),
        "tenantId": FieldHint(
            "Tenant ID",
            "The Millennium tenant GUID of this organization.",
            False,
            "ec2458f2-1e24-41c8-b71b-0e701af7583d",
        ),
    }

    def build_fhir_base_url(self, config: ProviderConfig | Mapping[str, Any]) -> str:
        cfg = self._typed_config(config, CernerConfig)
        # the host, or the whole base as vendors.md shows it (…/r4/{tenant}): the same base either way
        root = cfg.fhir_base_url.rstrip("/").removesuffix(f"/r4/{cfg.tenant_id}").removesuffix("/r4")
        return f"{root}/r4/{cfg.tenant_id}"
