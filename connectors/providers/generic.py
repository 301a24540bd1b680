"""Any SMART on FHIR server: nothing vendor-specific; discovery and the CapabilityStatement decide.

Facts from /work/shared/conformance/vendors.md §7.
"""

from __future__ import annotations

import datetime as dt

from connectors.providers.base import ProviderPlugin
from connectors.providers.config import GenericConfig
from connectors.providers.profiles import (
    AuthMethod,
    BulkSupport,
    RateLimit,
    RefreshPolicy,
    ScopeStyle,
    WriteProfile,
)

__all__ = ["GenericProvider"]


class GenericProvider(ProviderPlugin):
    id = "generic"
    display_name = "SMART on FHIR server"
    config_model = GenericConfig
    base_url_template = "{fhirBaseUrl}"
    discovery_quirks = (
        ".well-known/smart-configuration, else CapabilityStatement rest.security oauth-uris",
        "v2 scopes only if the server shows .rs/.c forms; record the granted string",
    )
    auth_methods = (
        AuthMethod("private_key_jwt", ("RS384", "ES384"), "client_credentials"),
        AuthMethod("private_key_jwt", ("RS384", "ES384"), "authorization_code"),
        AuthMethod("client_secret_basic", (), "authorization_code"),
        AuthMethod("none", (), "authorization_code"),
    )
    enforces_auth_methods = False  # the server's discovery decides (vendors.md §7), checked at launch
    refresh_policy = RefreshPolicy.ROTATE
    scope_style = ScopeStyle.V2
    bulk = BulkSupport.NONE  # only when the CapabilityStatement declares an export operation
    rate_limit = RateLimit(5, 1.0, "fhir-base", False, "ehrsync conservative default (vendors.md §7)")
    write_profile = WriteProfile(
        supported=True,
        doc_status_by_persona={
            "patient": frozenset({"preliminary", "final"}),
            "user": frozenset({"preliminary", "final"}),
            "system": frozenset({"preliminary", "final"}),
        },
        mime_types=frozenset({"text/plain", "text/html", "application/pdf"}),
        encounter_required=False,
        conditional_create=None,
        author_rule="optional",
        max_bytes=5_000_000,
        notes="gated at runtime by the CapabilityStatement create interaction and granted scopes (DWB-40/41)",
    )
    docs_checked_on = dt.date(2026, 11, 25)
