"""The ``.well-known/smart-configuration`` of a SMART App Launch 1.0 server (``profile: v1_well_known``).

SMART 1.0 required both this file and the CapabilityStatement's oauth-uris (its conformance page: "The server SHALL
use both"). The file then listed fewer fields than 2.x does: no ``grant_types_supported`` and no
``code_challenge_methods_supported`` (both required since 2.0), no ``issuer``/``jwks_uri``, and capability codes
without the 2.0 ones (``permission-v1``/``permission-v2``, ``client-confidential-asymmetric``, ...). Such a server
knows v1 scope syntax only.
"""

from __future__ import annotations

from typing import Any

__all__ = ["smart_1_document"]

#: The fields SMART App Launch 1.0 defined for the well-known file.
_FIELDS_1_0 = (
    "authorization_endpoint",
    "token_endpoint",
    "token_endpoint_auth_methods_supported",
    "registration_endpoint",
    "scopes_supported",
    "response_types_supported",
    "management_endpoint",
    "introspection_endpoint",
    "revocation_endpoint",
    "capabilities",
)
#: The capability codes SMART App Launch 1.0 defined.
_CAPABILITIES_1_0 = frozenset(
    {
        "launch-ehr",
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "sso-openid-connect",
        "context-passthrough-banner",
        "context-passthrough-style",
        "context-ehr-patient",
        "context-ehr-encounter",
        "context-standalone-patient",
        "context-standalone-encounter",
        "permission-offline",
        "permission-patient",
        "permission-user",
    }
)


def smart_1_document(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (the 2.x document) as a 1.0 server writes it: 1.0 fields, 1.0 capabilities, v1 scopes only."""
    old = {key: doc[key] for key in _FIELDS_1_0 if key in doc}
    if "capabilities" in old:
        old["capabilities"] = [c for c in old["capabilities"] if c in _CAPABILITIES_1_0]
    if "scopes_supported" in old:  # v2 spellings (``patient/*.rs``) did not exist yet
        old["scopes_supported"] = [s for s in old["scopes_supported"] if not s.endswith(".rs")]
    return old
