"""A vendor's FHIR base is the one its plugin builds from the config (vendors.md §1, §3-§5): the admin enters
the host for Oracle Health, eClinicalWorks and PointClickCare, and the tenant id or practice code is part of the
base. Discovery, the ``aud``, the issuer check and the connection's stored base all follow the built base."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from auth_service.core.config import Settings
from auth_service.services.context import build_context
from auth_service.services.errors import ProviderUnusableError
from auth_service.services.profiles import ClientProfile, resolve_profile
from auth_service.services.tenants import upsert_tenant
from auth_service.tenants.settings import TenantSeed
from tests.auth_service.conftest import AppHandle

TENANT = "ec2458f2-1e24-41c8-b71b-0e701af7583d"
HOSTS = {
    "cerner": (
        {"fhirBaseUrl": "https://fhir-ehr.cerner.com", "clientId": "c", "clientSecret": "s", "tenantId": TENANT},
        f"https://fhir-ehr.cerner.com/r4/{TENANT}",
    ),
    "ecw": (
        {"fhirBaseUrl": "https://fhir4.eclinicalworks.com", "clientId": "c", "practiceCode": "ABCD12", "kid": "k1"},
        "https://fhir4.eclinicalworks.com/fhir/r4/ABCD12",
    ),
    "pcc": (
        {
            "fhirBaseUrl": "https://connect.pointclickcare.com",
            "clientId": "c",
            "clientSecret": "s",
            "pccTenantId": "t-9",
        },
        "https://connect.pointclickcare.com/fhir/R4/t-9",
    ),
}


def _practice(provider_id: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"ehrIntegrations": {"enabledProviders": [provider_id], "providerConfigs": {provider_id: config}}}


def _resolve(make_settings: Callable[..., Settings], provider_id: str, practice: dict[str, Any]) -> ClientProfile:
    settings = make_settings()
    ctx = build_context(settings)
    try:
        with ctx.db.session() as s, s.begin():
            seed = TenantSeed.model_validate({"id": "clinic-1", "name": "Clinic One", "practice_settings": practice})
            upsert_tenant(s, seed, ctx.cipher)
            return resolve_profile(s, ctx.cipher, settings, "clinic-1", provider_id)
    finally:
        ctx.close()


@pytest.mark.parametrize("provider_id", sorted(HOSTS))
def test_sal10_vendor_profile_connects_to_the_plugin_built_base_not_the_host(
    make_settings: Callable[..., Settings], provider_id: str
) -> None:
    """SAL-10: the ``aud`` (and discovery, the issuer) is the vendor's real FHIR base, tenant or practice in it;
    the bare host the admin typed is never contacted."""
    config, built = HOSTS[provider_id]
    profile = _resolve(make_settings, provider_id, _practice(provider_id, config))
    assert (profile.fhir_base, profile.issuer) == (built, built)


@pytest.mark.parametrize("provider_id", sorted(HOSTS))
def test_sal10_a_config_holding_the_whole_base_keeps_it(
    make_settings: Callable[..., Settings], provider_id: str
) -> None:
    """An admin who typed the whole base (as vendors.md shows it), not the host, gets that base, not the tenant or
    practice segment twice (found in review: ``…/r4/{tenant}/r4/{tenant}``)."""
    config, built = HOSTS[provider_id]
    profile = _resolve(make_settings, provider_id, _practice(provider_id, {**config, "fhirBaseUrl": built}))
    assert (profile.fhir_base, profile.issuer) == (built, built)


def test_sal10_a_base_configured_with_its_trailing_slash_keeps_that_spelling(
    make_settings: Callable[..., Settings],
) -> None:
    """SAL-10: the ``aud`` is the base byte for byte; a base configured as ``…/R4/`` stays so, and with it the issuer
    an allow-list names (found in review: it became ``…/R4`` and every launch was refused ``invalid_issuer``)."""
    base = "https://fhir.epic.example.org/interconnect/api/FHIR/R4/"
    practice = _practice("epic", {"fhirBaseUrl": base, "clientId": "c", "clientSecret": "s"})
    profile = _resolve(make_settings, "epic", practice)
    assert (profile.fhir_base, profile.issuer) == (base, base)


def test_vendor_config_missing_its_tenant_is_a_configuration_error_naming_the_field(
    make_settings: Callable[..., Settings],
) -> None:
    """A seed may hold a config the plugin cannot build a base from: refused with the missing field, never the host."""
    config = {"fhirBaseUrl": "https://fhir-ehr.cerner.com", "clientId": "c", "clientSecret": "s"}
    with pytest.raises(ProviderUnusableError) as caught:
        _resolve(make_settings, "cerner", _practice("cerner", config))
    assert caught.value.code == "configuration_error"
    assert "tenantId" in caught.value.message and "FHIR base" in caught.value.message


def test_sal10_provider_test_endpoint_reports_and_checks_the_built_base(make_app: Callable[..., AppHandle]) -> None:
    """SAL-10: the admin's provider test reports and checks the built base. Only the bare host is allow-listed
    here: the built base is what the allow-list check refuses, before any network call."""
    config, built = HOSTS["cerner"]
    h = make_app(SMART_ISSUER_ALLOWLIST="https://fhir-ehr.cerner.com")
    key = h.bootstrap("t1", _practice("cerner", config))
    r = h.client.post("/api/integrations/admin/providers/cerner/test", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fhir_base"] == built
    assert body["discovery"]["ok"] is False and "SMART_ISSUER_ALLOWLIST" in body["discovery"]["message"]
