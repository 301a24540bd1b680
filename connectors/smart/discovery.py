"""SMART configuration discovery (SAL-01..05) with a v1 CapabilityStatement fallback."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import httpx

from connectors.errors import ConfigurationError, DiscoveryError
from connectors.http.urls import checked_url
from connectors.smart._http import get, is_outage, parse_json_body, unavailable
from connectors.smart.configuration import (
    SmartConfiguration,
    metadata_url,
    missing_required_fields,
    parse_capability_statement,
    parse_smart_configuration,
    well_known_url,
)
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


def _fetch_metadata(fhir_base: str, http: httpx.Client, well_known_problem: str) -> SmartConfiguration:
    meta = get(http, metadata_url(fhir_base), "application/fhir+json")
    if is_outage(meta.status_code):
        raise unavailable(meta, f"{fhir_base}: /metadata answered HTTP {meta.status_code}")
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
    response = get(http, well_known_url(fhir_base), "application/json")
    if is_outage(response.status_code):  # down, timing out or throttled, not "no SMART config"
        raise unavailable(response, f"{fhir_base}: smart-configuration answered HTTP {response.status_code}")
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

    A 5xx, 408 or 429 answer is an outage (``TransportError``, the EHR's ``Retry-After`` on its ``retry_after``), never
    taken for a server without a SMART configuration.

    With ``allowlist``, a base that is not allow-listed is refused before any network call (SAL-41).
    """
    checked_url(fhir_base, "FHIR base", ConfigurationError)
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
