"""SMART App Launch client protocol: pure functions over an injected ``httpx.Client``.

No storage, no web framework: the auth service and the token vault decide where state lives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from connectors.smart.authorize import build_authorize_url
    from connectors.smart.client_auth import (
        CLIENT_ASSERTION_TYPE,
        ClientAuth,
        JwtClientAuth,
        PublicClientAuth,
        SecretClientAuth,
        build_client_assertion,
        load_signing_key,
        parse_pem_private_key,
    )
    from connectors.smart.discovery import (
        DiscoveryCache,
        SmartConfiguration,
        check_auth_method_supported,
        discover,
        parse_smart_configuration,
    )
    from connectors.smart.idtoken import IdTokenError, JwksCache, validate_id_token
    from connectors.smart.introspection import IntrospectionResult, introspect_token
    from connectors.smart.issuers import is_issuer_allowed, normalize_issuer, require_issuer_allowed
    from connectors.smart.pkce import PkcePair, code_challenge_for, new_pkce
    from connectors.smart.revocation import revoke_token
    from connectors.smart.scopes import ResourceScope, ScopeSet, filtered_scopes, parse_scopes, scope_for_server
    from connectors.smart.token import (
        DEFAULT_EXPIRES_IN,
        TokenResponse,
        client_credentials_grant,
        exchange_code,
        parse_token_response,
        refresh_grant,
    )

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "DEFAULT_EXPIRES_IN",
    "ClientAuth",
    "DiscoveryCache",
    "IdTokenError",
    "IntrospectionResult",
    "JwksCache",
    "JwtClientAuth",
    "PkcePair",
    "PublicClientAuth",
    "ResourceScope",
    "ScopeSet",
    "SecretClientAuth",
    "SmartConfiguration",
    "TokenResponse",
    "build_authorize_url",
    "build_client_assertion",
    "check_auth_method_supported",
    "client_credentials_grant",
    "code_challenge_for",
    "discover",
    "exchange_code",
    "filtered_scopes",
    "introspect_token",
    "is_issuer_allowed",
    "load_signing_key",
    "new_pkce",
    "normalize_issuer",
    "parse_pem_private_key",
    "parse_scopes",
    "parse_smart_configuration",
    "parse_token_response",
    "refresh_grant",
    "require_issuer_allowed",
    "revoke_token",
    "scope_for_server",
    "validate_id_token",
]

# Each public name's module, imported on first use (``connectors.lazy_exports``).
_HOMES = {
    "build_authorize_url": "connectors.smart.authorize",
    "CLIENT_ASSERTION_TYPE": "connectors.smart.client_auth",
    "ClientAuth": "connectors.smart.client_auth",
    "JwtClientAuth": "connectors.smart.client_auth",
    "PublicClientAuth": "connectors.smart.client_auth",
    "SecretClientAuth": "connectors.smart.client_auth",
    "build_client_assertion": "connectors.smart.client_auth",
    "load_signing_key": "connectors.smart.client_auth",
    "parse_pem_private_key": "connectors.smart.client_auth",
    "DiscoveryCache": "connectors.smart.discovery",
    "SmartConfiguration": "connectors.smart.discovery",
    "check_auth_method_supported": "connectors.smart.discovery",
    "discover": "connectors.smart.discovery",
    "parse_smart_configuration": "connectors.smart.discovery",
    "IdTokenError": "connectors.smart.idtoken",
    "JwksCache": "connectors.smart.idtoken",
    "validate_id_token": "connectors.smart.idtoken",
    "IntrospectionResult": "connectors.smart.introspection",
    "introspect_token": "connectors.smart.introspection",
    "is_issuer_allowed": "connectors.smart.issuers",
    "normalize_issuer": "connectors.smart.issuers",
    "require_issuer_allowed": "connectors.smart.issuers",
    "PkcePair": "connectors.smart.pkce",
    "code_challenge_for": "connectors.smart.pkce",
    "new_pkce": "connectors.smart.pkce",
    "revoke_token": "connectors.smart.revocation",
    "ResourceScope": "connectors.smart.scopes",
    "ScopeSet": "connectors.smart.scopes",
    "filtered_scopes": "connectors.smart.scopes",
    "parse_scopes": "connectors.smart.scopes",
    "scope_for_server": "connectors.smart.scopes",
    "DEFAULT_EXPIRES_IN": "connectors.smart.token",
    "TokenResponse": "connectors.smart.token",
    "client_credentials_grant": "connectors.smart.token",
    "exchange_code": "connectors.smart.token",
    "parse_token_response": "connectors.smart.token",
    "refresh_grant": "connectors.smart.token",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
