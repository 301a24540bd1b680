"""PointClickCare: tenant id in the base, partner-program app types, read-only, conservative throttle.

Facts from /work/shared/conformance/vendors.md §5 (most details [verify]).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from connectors.errors import ConfigurationError
from connectors.providers.base import ProviderPlugin
from connectors.providers.config import PccConfig, ProviderConfig
from connectors.providers.profiles import (
    NOT_SUPPORTED,
    AuthMethod,
    BulkSupport,
    FieldHint,
    Persona,
    RateLimit,
    RefreshPolicy,
    ScopeStyle,
)

__all__ = ["PccProvider"]

#: vendors.md §5: the app type registered in the USCDI Connector portal decides whose data a token reads.
_APP_PERSONAS: Mapping[str, Persona] = {"provider": "user", "patient": "patient", "bulk": "system"}


class PccProvider(ProviderPlugin):
    id = "pcc"
    display_name = "PointClickCare"
    config_model = PccConfig
    base_url_template = "{fhirBaseUrl}/fhir/R4/{pccTenantId}"
    discovery_quirks = (
        "users only see residents their PointClickCare account can access: expect partial result sets",
        "USCDI v1 on US Core 3.1.1",
    )
    auth_methods = (
        AuthMethod("client_secret_basic", (), "authorization_code"),
        AuthMethod("client_secret_basic", (), "client_credentials"),
    )
    token_ttl_hint = None
    refresh_policy = RefreshPolicy.ROTATE
    scope_style = ScopeStyle.V1
    bulk = BulkSupport.PATIENT
    rate_limit = RateLimit(120, 60.0, "tenant", True, "ehrsync conservative default (PCC publishes none) [verify]")
    write_profile = NOT_SUPPORTED
    docs_checked_on = dt.date(2026, 11, 25)
    extra_field_hints = {
        "fhirBaseUrl": FieldHint(
            "PCC FHIR host",
            "PointClickCare host, without /fhir/R4/{tenant}.",
            False,
            "https://connect.pointclickcare.com",
        ),
        "pccTenantId": FieldHint(
            "PCC tenant id", "The customer (facility org) tenant id from the partner portal.", False, "12345"
        ),
        "appType": FieldHint(
            "App type", "provider, patient or bulk, as registered in the USCDI Connector portal.", False, "provider"
        ),
    }

    def launch_persona(self, config: Mapping[str, Any]) -> Persona:
        """A provider-facing app (the default app type) asks ``user/`` scopes, a patient-facing one ``patient/``,
        a bulk data app ``system/`` (vendors.md §5); an unknown app type is the default's."""
        return _APP_PERSONAS.get(_app_type(config), "user")

    def check_connection_kind(self, config: Mapping[str, Any], *, backend: bool) -> None:
        """vendors.md §5: an app is registered as patient-facing, provider-facing or bulk data; only a bulk app makes
        backend (client_credentials) connections, and a bulk app signs in no user or patient."""
        app_type = _app_type(config)
        if backend and app_type != "bulk":
            raise ConfigurationError(
                f"PointClickCare appType {app_type!r} makes no backend connection: register a bulk data app "
                "in the USCDI Connector portal and set appType 'bulk'"
            )
        if not backend and app_type == "bulk":
            raise ConfigurationError(
                "PointClickCare appType 'bulk' signs in no user or patient: use a provider or patient app for launches"
            )

    def build_fhir_base_url(self, config: ProviderConfig | Mapping[str, Any]) -> str:
        cfg = self._typed_config(config, PccConfig)
        root = cfg.fhir_base_url.rstrip("/").removesuffix(f"/fhir/R4/{cfg.pcc_tenant_id}").removesuffix("/fhir/R4")
        return f"{root}/fhir/R4/{cfg.pcc_tenant_id}"  # from the host, or from the whole base (the same base)


def _app_type(config: Mapping[str, Any]) -> str:
    return str(config.get("appType") or config.get("app_type") or "provider")
