"""SMART configuration discovery (SAL-01..05) with a v1 CapabilityStatement fallback."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpx

from connectors.errors import ConfigurationError, DiscoveryError, TransportError
from connectors.smart._http import get, parse_json_body
from connectors.smart.discovery_cache import DiscoveryCache
from connectors.smart.issuers import require_issuer_allowed

__all__ = [
    "DiscoveryCache",
    "SmartConfiguration",
    "check_auth_method_supported",
    "discover",
    "missing_required_fields",
    "parse_smart_configuration",
]

logger = logging.getLogger(__name__)

_OAUTH_URIS_SUFFIX = "StructureDefinition/oauth-uris"


def _str_list(payload: Mapping[str, Any], key: str) -> list[str]:
    value = payload.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DiscoveryError(f"smart-configuration field {key!r} must be a list of strings")
    return list(value)


def _opt_str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise DiscoveryError(f"smart-configuration field {key!r} must be a non-empty string")
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


def missing_required_fields(payload: Mapping[str, Any]) -> list[str]:
    """Required SAL-02 fields a smart-configuration lacks (``authorization_endpoint`` only for user launches)."""
    missing = [] if payload.get("token_endpoint") else ["token_endpoint"]
    missing += [key for key in ("capabilities", "grant_types_supported") if key not in payload]
    grants = payload.get("grant_types_supported")
    caps = payload.get("capabilities")
    user_launch = (isinstance(grants, list) and "authorization_code" in grants) or (
        isinstance(caps, list) and any(isinstance(c, str) and c.startswith("launch-") for c in caps)
    )
    if not payload.get("authorization_endpoint") and (user_launch or "grant_types_supported" in missing):
        missing.append("authorization_endpoint")
    return missing


def parse_smart_configuration(
    fhir_base: str, payload: Any, fallback: SmartConfiguration | None = None
) -> SmartConfiguration:
    """Validate a `.well-known/smart-configuration` document (SAL-02); relative URLs resolve against it.

    ``fallback`` (the CapabilityStatement's oauth-uris, SAL-04) fills required fields the document lacks.
    """
    if not isinstance(payload, dict):
        raise DiscoveryError(f"{fhir_base}: smart-configuration is not a JSON object")
    base_for_urls = _well_known_url(fhir_base)
    fb = fallback

    def url(key: str) -> str | None:
        value = _opt_str(payload, key)
        return urljoin(base_for_urls, value) if value else None

    token_endpoint = url("token_endpoint") or (fb.token_endpoint if fb else None)
    if not token_endpoint:
        raise DiscoveryError(f"{fhir_base}: smart-configuration lacks required field 'token_endpoint'")
    capabilities = _str_list(payload, "capabilities")
    authorization_endpoint = url("authorization_endpoint") or (fb.authorization_endpoint if fb else None)
    if "grant_types_supported" in payload:
        grant_types = _str_list(payload, "grant_types_supported")
    elif fb is not None:
        grant_types = ["authorization_code"] if authorization_endpoint else []
    else:
        raise DiscoveryError(f"{fhir_base}: smart-configuration lacks required field 'grant_types_supported'")
    user_launch = "authorization_code" in grant_types or any(c.startswith("launch-") for c in capabilities)
    if user_launch and not authorization_endpoint:
        raise DiscoveryError(f"{fhir_base}: smart-configuration lacks required field 'authorization_endpoint'")
    if "capabilities" not in payload and fb is None:
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
        # no advertised capabilities: nothing says the server speaks v2 scopes, so ask in v1 syntax (SAL-20)
        smart_v1=fb is not None and "capabilities" not in payload,
        raw={**payload, **({"oauth-uris-fallback": dict(fb.raw.get("oauth-uris", {}))} if fb else {})},
    )


def parse_capability_statement(fhir_base: str, payload: Any) -> SmartConfiguration:
    """Read the SMART v1 ``oauth-uris`` extension from ``rest.security`` (SAL-04)."""
    if not isinstance(payload, dict) or payload.get("resourceType") != "CapabilityStatement":
        raise DiscoveryError(f"{fhir_base}: /metadata is not a CapabilityStatement")
    uris: dict[str, str] = {}
    for rest in payload.get("rest") or []:
        security = rest.get("security") if isinstance(rest, dict) else None
        for ext in (security or {}).get("extension") or []:
            if not isinstance(ext, dict) or not str(ext.get("url", "")).endswith(_OAUTH_URIS_SUFFIX):
                continue
            for sub in ext.get("extension") or []:
                if isinstance(sub, dict) and isinstance(sub.get("url"), str) and isinstance(sub.get("valueUri"), str):
                    uris[sub["url"]] = urljoin(_metadata_url(fhir_base), sub["valueUri"])
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


def _well_known_url(fhir_base: str) -> str:
    return fhir_base.rstrip("/") + "/.well-known/smart-configuration"


def _metadata_url(fhir_base: str) -> str:
    return fhir_base.rstrip("/") + "/metadata"


def _fetch_metadata(fhir_base: str, http: httpx.Client, well_known_problem: str) -> SmartConfiguration:
    meta = get(http, _metadata_url(fhir_base), "application/fhir+json")
    if meta.status_code >= 500:
        raise TransportError(f"{fhir_base}: /metadata answered HTTP {meta.status_code}")
    if not meta.is_success:
        raise DiscoveryError(
            f"{fhir_base}: smart-configuration {well_known_problem} and /metadata HTTP {meta.status_code}"
        )
    return parse_capability_statement(fhir_base, parse_json_body(meta))


def _lenient(fhir_base: str, http: httpx.Client, payload: dict[str, Any], missing: list[str]) -> SmartConfiguration:
    """A well-known file lacking required fields: fill them from the CapabilityStatement (SAL-02, SAL-04)."""
    logger.warning(
        "smart-configuration at %s lacks %s; falling back to the CapabilityStatement oauth-uris",
        fhir_base,
        ", ".join(missing),
    )
    problem = "lacks " + ", ".join(repr(m) for m in missing)
    try:
        fallback = _fetch_metadata(fhir_base, http, problem)
    except DiscoveryError as exc:
        raise DiscoveryError(f"{fhir_base}: smart-configuration lacks required field {missing[0]!r} ({exc})") from exc
    return parse_smart_configuration(fhir_base, payload, fallback=fallback)


def _fetch(fhir_base: str, http: httpx.Client) -> SmartConfiguration:
    response = get(http, _well_known_url(fhir_base), "application/json")
    if response.status_code >= 500:
        raise TransportError(f"{fhir_base}: smart-configuration answered HTTP {response.status_code}")
    well_known_problem: str
    if response.is_success:
        payload = parse_json_body(response)
        if isinstance(payload, dict):
            missing = missing_required_fields(payload)
            return (
                _lenient(fhir_base, http, payload, missing)
                if missing
                else parse_smart_configuration(fhir_base, payload)
            )
        well_known_problem = "not JSON"
    else:
        well_known_problem = f"HTTP {response.status_code}"
    logger.info("smart-configuration at %s unusable (%s); trying /metadata (SMART v1)", fhir_base, well_known_problem)
    return _fetch_metadata(fhir_base, http, well_known_problem)


def discover(
    fhir_base: str,
    *,
    http: httpx.Client,
    cache: DiscoveryCache | None = None,
    allowlist: Iterable[str] | None = None,
) -> SmartConfiguration:
    """Discover a server's SMART endpoints: well-known first, then ``/metadata`` (SAL-01, SAL-04).

    With ``allowlist``, a base that is not allow-listed is refused before any network call (SAL-41).
    """
    if not fhir_base.startswith(("https://", "http://")):
        raise ConfigurationError(f"FHIR base must be an absolute http(s) URL, got {fhir_base!r}")
    if allowlist is not None:
        require_issuer_allowed(fhir_base, allowlist)
    if cache is not None:
        cached = cache.get(fhir_base)
        if cached is not None:
            return cached
    config = _fetch(fhir_base, http)
    if cache is not None:
        cache.put(config)
    return config


def check_auth_method_supported(config: SmartConfiguration, method: str, signing_alg: str | None = None) -> None:
    """Fail at connection setup when the configured client auth is not advertised (SAL-05).

    ``method`` is ``none`` (public), ``client_secret_basic`` or ``private_key_jwt``. Servers that omit
    ``token_endpoint_auth_methods_supported`` (v1, legacy) are given the benefit of the doubt.
    """
    supported = config.token_endpoint_auth_methods_supported
    if method == "none":
        return
    if supported and method not in supported:
        raise ConfigurationError(
            f"client auth method {method!r} is not advertised by {config.fhir_base} (supported: {', '.join(supported)})"
        )
    algs = config.token_endpoint_auth_signing_alg_values_supported
    if method == "private_key_jwt" and signing_alg and algs and signing_alg not in algs:
        raise ConfigurationError(
            f"signing alg {signing_alg!r} is not advertised by {config.fhir_base} (supported: {', '.join(algs)})"
        )
