"""athenahealth: multi-tenant base, every search scoped with ``ah-practice``, quotas in headers, no FHIR writes.

Facts from /work/shared/conformance/vendors.md §6 ([verify] on the exact ah-practice form).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from connectors.errors import ConfigurationError
from connectors.providers.base import ProviderPlugin
from connectors.providers.config import AthenaConfig, ProviderConfig
from connectors.providers.profiles import (
    NOT_SUPPORTED,
    AuthMethod,
    BulkSupport,
    FieldHint,
    RateLimit,
    RefreshPolicy,
    ScopeStyle,
)

__all__ = ["AthenaProvider", "practice_reference"]


def practice_reference(practice_id: str) -> str:
    """The Organization athenahealth uses for a practice (``ah-practice`` search value)."""
    return f"Organization/a-1.Practice-{practice_id}"


class AthenaProvider(ProviderPlugin):
    id = "athena"
    display_name = "athenahealth"
    config_model = AthenaConfig
    base_url_template = "{fhirBaseUrl} (preview https://api.preview.platform.athenahealth.com/fhir/r4)"
    discovery_quirks = (
        "preview and production bases and credentials differ",
        "OAuth per-minute and API per-day quotas are reported in response headers (read after every answer when in a "
        "RateLimit / RateLimit-* / X-RateLimit-* form: connectors.transport.quota)",
    )
    auth_methods = (
        AuthMethod("client_secret_basic", (), "client_credentials"),
        AuthMethod("private_key_jwt", ("RS384",), "client_credentials"),
        AuthMethod("none", (), "authorization_code"),
    )
    refresh_policy = RefreshPolicy.ROTATE
    scope_style = ScopeStyle.V1
    bulk = BulkSupport.GROUP
    rate_limit = RateLimit(5, 1.0, "app", True, "ehrsync default; real quotas per app in headers [verify]")
    write_profile = NOT_SUPPORTED
    docs_checked_on = dt.date(2026, 11, 25)
    extra_field_hints = {
        "practiceId": FieldHint("Practice ID", "The numeric athenahealth practice id.", False, "195900"),
    }

    def every_search_params(self, config: ProviderConfig | Mapping[str, Any] | None = None) -> dict[str, str]:
        """``ah-practice`` on every search (vendors.md §6): the practice's Organization."""
        if config is None:
            raise ConfigurationError("athenahealth searches need the practice config (ah-practice on every search)")
        cfg = self._typed_config(config, AthenaConfig)
        return {"ah-practice": practice_reference(cfg.practice_id)}
