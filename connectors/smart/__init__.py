"""SMART App Launch client protocol: pure functions over an injected ``httpx.Client``.

No storage, no web framework: the auth service and the token vault decide where state lives.
"""

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
