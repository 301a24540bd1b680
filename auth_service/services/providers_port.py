"""The few things the web layer asks of a vendor plugin (``connectors.providers``), in one place."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from connectors.errors import ConfigurationError
from connectors.providers import ProviderPlugin, get_provider

__all__ = [
    "plugin",
    "plugin_default_scopes",
    "plugin_display_name",
    "plugin_fhir_base",
    "plugin_write_supported",
    "validate_config",
]

logger = logging.getLogger(__name__)
_SMART_NAME = "Your health system (SMART on FHIR)"


def plugin(provider_id: str) -> ProviderPlugin | None:
    """The vendor plugin, or ``None`` for ``smart`` (the tenant's own SMART server) and unknown ids."""
    if provider_id == "smart":
        return None
    try:
        return get_provider(provider_id)
    except ConfigurationError:
        return None


def plugin_display_name(provider_id: str) -> str:
    p = plugin(provider_id)
    return str(p.display_name) if p is not None else _SMART_NAME


def plugin_default_scopes(provider_id: str, *, note: bool, patient: bool) -> str | None:
    p = plugin(provider_id)
    if p is None:
        return None
    scopes = p.default_scopes(enable_write=note or patient, enable_patient_create=patient, enable_note_create=note)
    return " ".join(str(s) for s in scopes)


def plugin_fhir_base(provider_id: str, config: Mapping[str, Any]) -> str | None:
    """The vendor's FHIR base built from its config (e.g. Oracle's tenant GUID), when it can build one."""
    p = plugin(provider_id)
    if p is None:
        return None
    try:
        return p.build_fhir_base_url(config)
    except (ValueError, ConfigurationError) as exc:
        logger.info("provider %s: cannot build a FHIR base URL (%s)", provider_id, type(exc).__name__)
        return None


def plugin_write_supported(provider_id: str) -> bool:
    """The vendor's write profile says notes can be filed via FHIR (generic servers: decided by metadata)."""
    p = plugin(provider_id)
    if p is None:
        return True
    return p.write_profile.supported


def validate_config(provider_id: str, config: Mapping[str, Any]) -> list[dict[str, str]]:
    """Field errors of ``config`` against the plugin's schema (empty when valid or when there is no plugin)."""
    from pydantic import ValidationError

    p = plugin(provider_id)
    if p is None:
        return []
    try:
        p.config_model.model_validate(dict(config))
    except ValidationError as exc:
        return [
            {"field": ".".join(str(x) for x in e["loc"]) or "config", "message": str(e["msg"])} for e in exc.errors()
        ]
    return []


def field_hints(provider_id: str) -> dict[str, Any]:
    """The plugin's UI hints (label, help, secret) per field."""
    p = plugin(provider_id)
    if p is None:
        return {}
    return {name: {"label": h.label, "help": h.help, "secret": h.secret} for name, h in p.field_hints.items()}
