"""Lookup of provider plugins by id; the one place that lists them."""

from __future__ import annotations

from types import MappingProxyType

from connectors.errors import ConfigurationError
from connectors.providers.athena import AthenaProvider
from connectors.providers.base import ProviderPlugin
from connectors.providers.cerner import CernerProvider
from connectors.providers.ecw import EcwProvider
from connectors.providers.epic import EpicProvider
from connectors.providers.generic import GenericProvider
from connectors.providers.pcc import PccProvider

__all__ = ["TENANT_SMART_PROVIDER_ID", "all_providers", "get_provider"]

#: A tenant's own SMART on FHIR server (``practice_settings.smartFhir``): no vendor quirks, so the generic plugin.
TENANT_SMART_PROVIDER_ID = "smart"

_PROVIDERS: MappingProxyType[str, ProviderPlugin] = MappingProxyType(
    {
        plugin.id: plugin
        for plugin in (
            EpicProvider(),
            CernerProvider(),
            EcwProvider(),
            PccProvider(),
            AthenaProvider(),
            GenericProvider(),
        )
    }
)


def get_provider(provider_id: str) -> ProviderPlugin:
    """The plugin for ``provider_id``; ConfigurationError lists the known ids otherwise."""
    if provider_id == TENANT_SMART_PROVIDER_ID:
        return _PROVIDERS["generic"]
    try:
        return _PROVIDERS[provider_id]
    except KeyError:
        known = ", ".join(sorted(_PROVIDERS))
        raise ConfigurationError(f"unknown provider {provider_id!r} (known: {known})") from None


def all_providers() -> list[ProviderPlugin]:
    return list(_PROVIDERS.values())
