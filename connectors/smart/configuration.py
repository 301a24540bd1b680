"""Parsing SMART configuration documents (SAL-01..05): ``.well-known/smart-configuration`` and the
CapabilityStatement fallback. Pure functions over decoded JSON; ``discovery`` fetches, this module reads."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.errors import DiscoveryError
from connectors.fhir.capability import security_problem
from connectors.http.urls import resolve_checked_url

__all__ = [
    "SmartConfiguration",
    "metadata_url",
    "missing_required_fields",
    "parse_capability_statement",
    "parse_smart_configuration",
    "well_known_url",
]

logger = logging.getLogger(__name__)


def well_known_url(fhir_base: str) -> str:
    return fhir_base.rstrip("/") + "/.well-known/smart-configuration"


def metadata_url(fhir_base: str) -> str:
    return fhir_base.rstrip("/") + "/metadata"


_OAUTH_URIS_SUFFIX = "StructureDefinition/oauth-uris"


def _str_list(payload: Mapping[str, Any], key: str) -> list[str]:
    value = payload.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DiscoveryError(f"smart-configuration field {key!r} must be a list of strings")
    return list(value)


#: Endpoints a launch cannot do without; any other the server names is optional (SAL-02).
_NEEDED = frozenset({"token_endpoint", "authorization_endpoint", "token", "authorize"})


def _endpoint(value: str, against: str, what: str, key: str) -> str | None:
    """An endpoint the server named, resolved against its document. One urllib cannot split, or with no host or a
    bad port, is a DiscoveryError naming the field (SAL-02) when a launch needs it, never a ValueError at the first
    call to it; an optional one (revocation, introspection, registration, management, ``jwks_uri``) is left out
    with a warning, as if absent, so an endpoint ehrsync may never call does not stop every launch."""
    try:
        return resolve_checked_url(value, against, what, DiscoveryError)
    except DiscoveryError as exc:
        if key in _NEEDED:
            raise
        logger.warning("SMART discovery: ignoring an unusable optional endpoint: %s", exc)
        return None


def _opt_str(payload: Mapping[str, Any], key: str) -> str | None:
    """A string field; absent, null or blank is none. A templated file may write what is not set up as "": that is
    no endpoint, so a needed one is completed from the CapabilityStatement as a missing one is (``_named``) and an
    optional one is left out (warned), as an unusable one is (SAL-02)."""
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DiscoveryError(f"smart-configuration field {key!r} must be a non-empty string")
    if not value.strip():
        logger.warning("SMART discovery: smart-configuration field %r is blank; taken as absent", key)
        return None
    return value


@dataclass(frozen=True)
class SmartConfiguration:
    """What a server advertises; ``smart_v1`` marks endpoints read from the CapabilityStatement (SAL-04)."""

    fhir_base: str
    token_endpoint: str
    authorization_endpoint: str | None = None
    capabilities: tuple[str, ...] = ()
    code_challenge_methods_supported: tuple[str, ...] = ()
    grant_types_supported: tuple[str, ...] = ()
    token_endpoint_auth_methods_supported: tuple[str, ...] = ()
    token_endpoint_auth_signing_alg_values_supported: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = None
    registration_endpoint: str | None = None
    management_endpoint: str | None = None
    issuer: str | None = None
    jwks_uri: str | None = None
    smart_v1: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def v1_scopes_only(self) -> bool:
        """SAL-20: a v1 server (SAL-04), or one advertising ``permission-v1`` without ``permission-v2``, is asked
        in v1 scope spelling only."""
        caps = set(self.capabilities)
        return self.smart_v1 or ("permission-v1" in caps and "permission-v2" not in caps)

    @property
    def supports_s256(self) -> bool:
        return "S256" in self.code_challenge_methods_supported

    def require_user_launch(self) -> str:
        """The authorization endpoint, refusing servers without S256 PKCE (SAL-03).

        v1 servers (SAL-04) predate the PKCE requirement; ehrsync still always sends S256 to them.
        """
        if not self.authorization_endpoint:
            raise DiscoveryError(f"{self.fhir_base}: no authorization_endpoint advertised: user launch impossible")
        if not self.smart_v1 and not self.supports_s256:
            raise DiscoveryError(f"{self.fhir_base}: code_challenge_methods_supported lacks S256: refusing user launch")
        if "plain" in self.code_challenge_methods_supported:
            logger.warning("server %s advertises PKCE 'plain'; ehrsync uses S256 only", self.fhir_base)
        return self.authorization_endpoint


def _named(payload: Mapping[str, Any], key: str) -> bool:
    """Whether the file gives ``key`` a value (a blank string, ``null`` or an empty list is none: RFC 8414 omits a
    claim with zero elements)."""
    value = payload.get(key)
    return bool(value.strip()) if isinstance(value, str) else bool(value)


def missing_required_fields(payload: Mapping[str, Any]) -> list[str]:
    """Required SAL-02 fields a smart-configuration lacks (``authorization_endpoint`` only for user launches)."""
    missing = [] if _named(payload, "token_endpoint") else ["token_endpoint"]
    missing += [key for key in ("capabilities", "grant_types_supported") if payload.get(key) is None]
    grants = payload.get("grant_types_supported")
    caps = payload.get("capabilities")
    user_launch = (isinstance(grants, list) and "authorization_code" in grants) or (
        isinstance(caps, list) and any(isinstance(c, str) and c.startswith("launch-") for c in caps)
    )
    if not _named(payload, "authorization_endpoint") and (user_launch or "grant_types_supported" in missing):
        missing.append("authorization_endpoint")
    return missing


def _smart_1_document(payload: Mapping[str, Any], capabilities: list[str]) -> bool:
    """A SMART App Launch 1.0 server's file (read with its CapabilityStatement, which 1.0 also required): no
    ``capabilities``, or none of what only 2.0 requires: no ``grant_types_supported``, no
    ``code_challenge_methods_supported`` and no ``permission-v2`` (a 2.0 capability). Such a server is v1 as SAL-04's
    are: scopes in v1 syntax (SAL-20), S256 not advertised (SAL-03; ehrsync still sends it). A 2.x server leaving out
    one of those fields (servers in the wild omit ``grant_types_supported`` or the ``permission-v*`` codes) but naming
    another stays 2.x: taken for v1, it would be asked without the granular scopes its vendor plugin relies on. A
    field written ``null`` or ``[]`` names nothing (a 1.0 server serialising its whole configuration object so writes
    the 2.0 fields)."""
    if payload.get("capabilities") is None:
        return True
    v2_marks = (_named(payload, "grant_types_supported"), _named(payload, "code_challenge_methods_supported"))
    return not any(v2_marks) and "permission-v2" not in capabilities


def parse_smart_configuration(
    fhir_base: str, payload: Any, fallback: SmartConfiguration | None = None
) -> SmartConfiguration:
    """Validate a `.well-known/smart-configuration` document (SAL-02); relative URLs resolve against it.

    ``fallback`` (the CapabilityStatement's oauth-uris, SAL-04) fills required fields the document lacks.
    """
    if not isinstance(payload, dict):
        raise DiscoveryError(f"{fhir_base}: smart-configuration is not a JSON object")
    base_for_urls = well_known_url(fhir_base)
    fb = fallback

    def url(key: str) -> str | None:
        value = _opt_str(payload, key)
        return (
            _endpoint(value, base_for_urls, f"{fhir_base}: smart-configuration field {key!r}", key) if value else None
        )

    token_endpoint = url("token_endpoint") or (fb.token_endpoint if fb else None)
    if not token_endpoint:
        raise DiscoveryError(f"{fhir_base}: smart-configuration lacks required field 'token_endpoint'")
    capabilities = _str_list(payload, "capabilities")
    authorization_endpoint = url("authorization_endpoint") or (fb.authorization_endpoint if fb else None)
    if payload.get("grant_types_supported") is not None:  # null: not written (a serialised object's unset field)
        grant_types = _str_list(payload, "grant_types_supported")
    elif fb is not None:
        grant_types = ["authorization_code"] if authorization_endpoint else []
    else:
        raise DiscoveryError(f"{fhir_base}: smart-configuration lacks required field 'grant_types_supported'")
    user_launch = "authorization_code" in grant_types or any(c.startswith("launch-") for c in capabilities)
    if user_launch and not authorization_endpoint:
        raise DiscoveryError(f"{fhir_base}: smart-configuration lacks required field 'authorization_endpoint'")
    if payload.get("capabilities") is None and fb is None:
        raise DiscoveryError(f"{fhir_base}: smart-configuration lacks required field 'capabilities'")
    return SmartConfiguration(
        fhir_base=fhir_base,
        token_endpoint=token_endpoint,
        authorization_endpoint=authorization_endpoint,
        capabilities=tuple(capabilities),
        code_challenge_methods_supported=tuple(_str_list(payload, "code_challenge_methods_supported")),
        grant_types_supported=tuple(grant_types),
        token_endpoint_auth_methods_supported=tuple(_str_list(payload, "token_endpoint_auth_methods_supported")),
        token_endpoint_auth_signing_alg_values_supported=tuple(
            _str_list(payload, "token_endpoint_auth_signing_alg_values_supported")
        ),
        scopes_supported=tuple(_str_list(payload, "scopes_supported")),
        revocation_endpoint=url("revocation_endpoint") or (fb.revocation_endpoint if fb else None),
        introspection_endpoint=url("introspection_endpoint") or (fb.introspection_endpoint if fb else None),
        registration_endpoint=url("registration_endpoint") or (fb.registration_endpoint if fb else None),
        management_endpoint=url("management_endpoint") or (fb.management_endpoint if fb else None),
        issuer=_opt_str(payload, "issuer"),
        jwks_uri=url("jwks_uri"),
        smart_v1=fb is not None and _smart_1_document(payload, capabilities),
        raw={**payload, **({"oauth-uris-fallback": dict(fb.raw.get("oauth-uris", {}))} if fb else {})},
    )


def parse_capability_statement(fhir_base: str, payload: Any) -> SmartConfiguration:
    """Read the SMART v1 ``oauth-uris`` extension from ``rest.security`` (SAL-04); a statement refused only for
    what this reads (the sync's readers refuse the rest, and fall back to the vendor's defaults)."""
    problem = security_problem(payload)
    if problem is not None or not isinstance(payload, dict):
        raise DiscoveryError(f"{fhir_base}: /metadata is not a CapabilityStatement: {problem}")
    uris: dict[str, str] = {}
    for rest in payload.get("rest") or []:
        security = rest.get("security") if isinstance(rest, dict) else None
        for ext in (security or {}).get("extension") or []:
            if not isinstance(ext, dict) or not str(ext.get("url", "")).endswith(_OAUTH_URIS_SUFFIX):
                continue
            for sub in ext.get("extension") or []:
                if isinstance(sub, dict) and isinstance(sub.get("url"), str) and isinstance(sub.get("valueUri"), str):
                    where = f"{fhir_base}: /metadata oauth-uris {sub['url']!r}"
                    resolved = _endpoint(sub["valueUri"], metadata_url(fhir_base), where, sub["url"])
                    if resolved is not None:
                        uris[sub["url"]] = resolved
    if "token" not in uris:
        raise DiscoveryError(f"{fhir_base}: no SMART configuration and no oauth-uris token endpoint in /metadata")
    return SmartConfiguration(
        fhir_base=fhir_base,
        token_endpoint=uris["token"],
        authorization_endpoint=uris.get("authorize"),
        revocation_endpoint=uris.get("revoke"),
        introspection_endpoint=uris.get("introspect"),
        registration_endpoint=uris.get("register"),
        management_endpoint=uris.get("manage"),
        grant_types_supported=("authorization_code",) if "authorize" in uris else (),
        smart_v1=True,
        raw={"oauth-uris": uris},
    )
