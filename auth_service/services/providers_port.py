"""The few things the web layer asks of a vendor plugin (``connectors.providers``), in one place."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from connectors.errors import ConfigurationError
from connectors.http import url_problem
from connectors.providers import BulkSupport, ProviderPlugin, check_provider_client_auth, get_provider
from connectors.providers.config import MAX_CLIENT_ID_LENGTH
from connectors.providers.profiles import WriteProfile
from connectors.smart.scopes import parse_scopes

__all__ = [
    "check_connection_kind",
    "check_provider_client_auth",
    "plugin",
    "plugin_default_scopes",
    "plugin_display_name",
    "plugin_fhir_base",
    "plugin_group_export_only",
    "plugin_wildcard_scopes",
    "plugin_write_profile",
    "plugin_write_supported",
    "validate_config",
]

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


def plugin_default_scopes(provider_id: str, config: Mapping[str, Any], *, note: bool, patient: bool) -> str | None:
    """The vendor's default launch scopes, for the persona the app is registered as (PointClickCare's appType)."""
    p = plugin(provider_id)
    if p is None:
        return None
    scopes = p.default_scopes(
        enable_write=note or patient,
        enable_patient_create=patient,
        enable_note_create=note,
        persona=p.launch_persona(config),
    )
    return " ".join(str(s) for s in scopes)


#: Config members a FHIR base is never built from: secrets (sealed, and a PEM is parsed for nothing).
_SECRET_MEMBERS = frozenset({"client_secret", "clientSecret", "private_key", "privateKey", "private_key_pem"})


def plugin_fhir_base(p: ProviderPlugin, config: Mapping[str, Any]) -> str:
    """The vendor's FHIR base built from its stored config (vendors.md §1: Oracle Health's ``/r4/{tenantId}``,
    eCW's ``/fhir/r4/{practiceCode}``, PointClickCare's ``/fhir/R4/{pccTenantId}``): the admin enters the host.

    A stored config is canonicalized (``client_id``, ``key_id``, ``auth_method``...), so only the members the
    plugin's schema knows are passed to it. ConfigurationError names a missing or bad field.
    """
    view = {k: v for k, v in p.schema_members(config).items() if k not in _SECRET_MEMBERS}
    return p.build_fhir_base_url(view)


def check_connection_kind(provider_id: str, config: Mapping[str, Any], *, backend: bool) -> None:
    """ConfigurationError when the vendor's registered app type cannot make this kind of connection (PCC §5)."""
    p = plugin(provider_id)
    if p is not None:
        p.check_connection_kind(config, backend=backend)


def plugin_group_export_only(provider_id: str) -> bool:
    """The vendor exports Bulk data only at Group level (Oracle Health, Epic, athenahealth: vendors.md §1)."""
    p = plugin(provider_id)
    return p is not None and p.bulk is BulkSupport.GROUP


def plugin_wildcard_scopes(provider_id: str, scope: str) -> list[str]:
    """The wildcard resource scopes of ``scope`` (``system/*.read``, ``system/Observation.*``) where the vendor takes
    none and refuses the request (Oracle Health: each type listed explicitly, vendors.md §3); else none."""
    p = plugin(provider_id)
    if p is None or p.wildcard_scopes:
        return []
    return [s.raw for s in parse_scopes(scope).resource_scopes if s.resource_type == "*" or _any_permission(s.raw)]


def _any_permission(raw: str) -> bool:
    return raw.split("?", 1)[0].endswith(".*")


def plugin_write_supported(provider_id: str) -> bool:
    """The vendor's write profile says notes can be filed via FHIR (generic servers: decided by metadata)."""
    p = plugin(provider_id)
    if p is None:
        return True
    return p.write_profile.supported


def plugin_write_profile(provider_id: str) -> WriteProfile | None:
    """The write profile the write-back run checks a note against (``smart``: the generic server's, as there);
    ``None`` for an unknown id, whose notes the run cannot send at all."""
    try:
        return get_provider(provider_id).write_profile
    except ConfigurationError:
        return None


#: A stored config holds a client id, a secret or key (a PEM is ~3 KiB) and a few URLs: far less than this.
MAX_CONFIG_BYTES = 64 * 1024


def _bounds(config: Mapping[str, Any], *, client_id: bool) -> list[dict[str, str]]:
    """What every config must meet, with or without a plugin schema: finite numbers and at most MAX_CONFIG_BYTES
    of JSON; with ``client_id`` (``smart``'s legacy keys have no schema) a client id a vendor could have issued."""
    try:
        size = len(json.dumps(config, allow_nan=False))
    except ValueError:
        return [{"field": "config", "message": "numbers must be finite (no NaN or Infinity)"}]
    if size > MAX_CONFIG_BYTES:
        return [{"field": "config", "message": f"config is {size} bytes of JSON; at most {MAX_CONFIG_BYTES}"}]
    errors = []
    for name in ("clientId", "client_id") if client_id else ():
        value = config.get(name)
        if name in config and (not isinstance(value, str) or not 1 <= len(value.strip()) <= MAX_CLIENT_ID_LENGTH):
            errors.append({"field": name, "message": f"must be text of 1-{MAX_CLIENT_ID_LENGTH} characters"})
    for name in _LEGACY_TEXT if client_id else ():
        if name in config and (wrong := _not_text(config[name], lists=name == "scopes")):
            kind = "text or a list of text" if name == "scopes" else "text"
            errors.append({"field": name, "message": f"must be {kind}, not {wrong}"})
    for name in _LEGACY_URLS if client_id else ():
        if name in config and not _is_http_url(config[name]):
            message = "must be an absolute http(s) URL with a host"
            if config[name] in (None, ""):  # a form's empty field: left out, the tenant's smartFhir value applies
                message += " (leave it out to use the tenant settings' smartFhir value)"
            errors.append({"field": name, "message": message})
    return errors


#: ``smart``'s legacy keys that name a server: its FHIR base and issuer (tenant settings' smartFhir URLs: scheme only)
_LEGACY_URLS = ("issuer", "fhirBaseUrl", "fhir_base_url", "fhir_base")


#: ``smart``'s legacy keys read as text (``str()`` made ``true`` the scope or auth method "True"); null: left out.
_LEGACY_TEXT = (
    "scopes",
    "auth_method",
    "authMethod",
    "signing_alg",
    "signingAlg",
    "alg",
    "client_secret",
    "clientSecret",
    "private_key_pem",
    "privateKey",
    "private_key",
    "key_id",
    "kid",
    "keyId",
    "displayName",
    "display_name",
)


def _not_text(value: Any, *, lists: bool) -> str | None:
    """What ``value`` is when it is not text (or, with ``lists``, a list of text), in JSON's words; None when it
    is text or null."""
    if value is None or isinstance(value, str):
        return None
    if lists and isinstance(value, list):
        return next(
            (f"a list whose item {i} is {_json_kind(v)}" for i, v in enumerate(value) if not isinstance(v, str)), None
        )
    return _json_kind(value)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"JSON {str(value).lower()}"
    kinds = ((int | float, "a JSON number"), (list, "a JSON array"), (dict, "a JSON object"), (str, "text"))
    return next((kind for types, kind in kinds if isinstance(value, types)), "null")


def _is_http_url(value: Any) -> bool:
    """An absolute http(s) URL with a host and a usable port: anything else made the flows that read the config fail
    at launch."""
    return isinstance(value, str) and url_problem(value) is None


def validate_config(provider_id: str, config: Mapping[str, Any]) -> list[dict[str, str]]:
    """Field errors of ``config``: the bounds every config meets, then the plugin's schema (none for ``smart``)."""
    from pydantic import ValidationError

    p = plugin(provider_id)
    bounds = _bounds(config, client_id=p is None)
    if p is None or bounds:
        return bounds
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
