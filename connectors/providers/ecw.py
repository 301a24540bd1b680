"""eClinicalWorks: one base per practice code, RS384-only JWT, rotating refresh tokens, and a hard
250 calls/min per practice base (FHIR + /authorize + /token), budgeted at 240 with headroom.

Facts from /work/shared/conformance/vendors.md §4 (mostly [3p][verify]).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from connectors.providers.base import ProviderPlugin
from connectors.providers.config import EcwConfig, ProviderConfig
from connectors.providers.profiles import (
    NOT_SUPPORTED,
    AuthMethod,
    BulkSupport,
    FieldHint,
    RateLimit,
    RefreshPolicy,
    ScopeStyle,
)

__all__ = ["EcwProvider"]


class EcwProvider(ProviderPlugin):
    id = "ecw"
    display_name = "eClinicalWorks"
    config_model = EcwConfig
    base_url_template = "{fhirBaseUrl}/fhir/r4/{practiceCode}"
    discovery_quirks = (
        "each practice enables FHIR separately; discovery and metadata live on each practice base",
        "PKCE S256 mandatory; JWKS URL must be allow-listed by eCW",
    )
    auth_methods = (
        AuthMethod("private_key_jwt", ("RS384",), "client_credentials"),
        AuthMethod("private_key_jwt", ("RS384",), "authorization_code"),
        AuthMethod("none", (), "authorization_code"),
    )
    token_ttl_hint = 3600  # user tokens; backend tokens last 300 s and say so in expires_in [3p][verify]
    refresh_policy = RefreshPolicy.ROTATE
    scope_style = ScopeStyle.V1
    bulk = BulkSupport.PATIENT
    rate_limit = RateLimit(
        240,
        60.0,
        "practice-base",
        True,
        "eCW: 250/min per practice base incl. token [3p][verify]",
        across_processes=True,
    )
    write_profile = NOT_SUPPORTED
    docs_checked_on = dt.date(2026, 11, 25)
    extra_field_hints = {
        "fhirBaseUrl": FieldHint(
            "eCW FHIR host",
            "Host from eCW's directory, without /fhir/r4/{practiceCode}.",
            False,
            "https://fhir4.eclinicalworks.com",
        ),
        "practiceCode": FieldHint("Practice code", "The practice code from eCW's developer portal.", False, "ABCDEF"),
    }

    def build_fhir_base_url(self, config: ProviderConfig | Mapping[str, Any]) -> str:
        cfg = self._typed_config(config, EcwConfig)
        root = cfg.fhir_base_url.rstrip("/").removesuffix(f"/fhir/r4/{cfg.practice_code}").removesuffix("/fhir/r4")
        return f"{root}/fhir/r4/{cfg.practice_code}"  # from the host, or from the whole base (the same base)
