"""Vendor plugins: what ehrsync knows about Epic, Oracle Health, eCW, PointClickCare, athenahealth and
generic SMART servers (vendors.md §8, draft-note DWB-70)."""

from connectors.providers.base import ProviderPlugin, build_scopes
from connectors.providers.config import (
    AthenaConfig,
    CernerConfig,
    EcwConfig,
    EpicConfig,
    GenericConfig,
    PccConfig,
    ProviderConfig,
)
from connectors.providers.profiles import (
    AuthMethod,
    BulkSupport,
    FieldHint,
    Persona,
    RateLimit,
    RefreshPolicy,
    ScopeStyle,
    WriteProfile,
)
from connectors.providers.registry import (
    TENANT_SMART_PROVIDER_ID,
    all_providers,
    check_provider_client_auth,
    get_provider,
)

__all__ = [
    "TENANT_SMART_PROVIDER_ID",
    "AthenaConfig",
    "AuthMethod",
    "BulkSupport",
    "CernerConfig",
    "EcwConfig",
    "EpicConfig",
    "FieldHint",
    "GenericConfig",
    "PccConfig",
    "Persona",
    "ProviderConfig",
    "ProviderPlugin",
    "RateLimit",
    "RefreshPolicy",
    "ScopeStyle",
    "WriteProfile",
    "all_providers",
    "build_scopes",
    "check_provider_client_auth",
    "get_provider",
]
