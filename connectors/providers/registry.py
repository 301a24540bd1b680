"""Lookup of provider plugins by id; the one place that lists them."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from connectors.errors import ConfigurationError
from connectors.providers.athena import AthenaProvider
from connectors.providers.base import ProviderPlugin
from connectors.providers.cerner import CernerProvider
from connectors.providers.ecw import EcwProvider
from connectors.providers.epic import EpicProvider
from connectors.providers.generic import GenericProvider
from connectors.providers.pcc import PccProvider

if TYPE_CHECKING:  # the client-auth module loads PyJWT and cryptography: only a check of a client's auth needs them
    from connectors.smart import ClientAuth

__all__ = ["TENANT_SMART_PROVIDER_ID", "all_providers", "check_provider_client_auth", "get_provider"]

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


def check_provider_client_auth(provider_id: str, auth: ClientAuth, grant: str | None = None) -> None:
    """AuthMethodNotAllowedError when ``auth`` (method, and alg for a JWT) is not one ``provider_id``'s plugin
    declares for ``grant``; unknown ids and the tenant's own SMART server are decided by discovery instead."""
    plugin = _PROVIDERS.get(provider_id)
    if plugin is None:
        return
    from connectors.smart import JwtClientAuth

    alg = auth.alg if isinstance(auth, JwtClientAuth) else None
    plugin.check_client_auth(auth.method, alg, grant=grant)
