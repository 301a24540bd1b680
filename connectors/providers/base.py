"""The ProviderPlugin contract: one subclass per vendor declares what vendors.md §8 lists.

Vendors differ in data (URLs, scopes, quirks), not in control flow, so the base class implements the
behaviour once from class attributes and a vendor overrides only where its documentation says so.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError

from connectors.errors import AuthMethodNotAllowedError, ConfigurationError
from connectors.fhir.capability import declares_search_param
from connectors.fhir.resource_types import SYNCED_RESOURCE_TYPES, patient_search_param
from connectors.providers.config import ProviderConfig
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
from connectors.smart.scopes import ScopeSet

__all__ = ["COMMON_FIELD_HINTS", "DEFAULT_OVERLAP", "ProviderPlugin", "build_scopes"]

DEFAULT_OVERLAP = dt.timedelta(minutes=5)

C = TypeVar("C", bound=ProviderConfig)

_CONTEXT_SCOPES: Mapping[Persona, tuple[str, ...]] = {
    "patient": ("launch/patient", "openid", "fhirUser", "offline_access"),
    "user": ("launch", "openid", "fhirUser", "offline_access"),
    "system": (),
}

COMMON_FIELD_HINTS: Mapping[str, FieldHint] = {
    "fhirBaseUrl": FieldHint(
        "FHIR base URL",
        "The R4 service root the EHR published for this organization.",
        False,
        "https://ehr.example.org/fhir/r4",
    ),
    "clientId": FieldHint("Client ID", "The client id the EHR issued when the app was registered.", False, ""),
    "clientSecret": FieldHint("Client secret", "Only for confidential clients that use a shared secret.", True, ""),
    "privateKey": FieldHint(
        "Private key (PEM)",
        "Signs private_key_jwt assertions; its public half is in the JWKS.",
        True,
        "-----BEGIN PRIVATE KEY-----",
    ),
    "kid": FieldHint("Key ID (kid)", "The kid of the private key as published in the JWKS.", False, "ehrsync-2026-01"),
    "jwksUrl": FieldHint(
        "JWKS URL",
        "Where the EHR fetches ehrsync's public keys (must be allow-listed).",
        False,
        "https://ehrsync.example.org/.well-known/jwks.json",
    ),
}


def build_scopes(
    style: ScopeStyle,
    persona: Persona,
    read_types: tuple[str, ...],
    write_types: tuple[str, ...] = (),
) -> list[str]:
    """Explicit per-type scopes (no wildcards, Oracle Health refuses them) in the vendor's spelling."""
    read_suffix, write_suffix = (".read", ".write") if style is ScopeStyle.V1 else (".rs", ".c")
    scopes = [f"{persona}/{kind}{read_suffix}" for kind in read_types]
    scopes += [f"{persona}/{kind}{write_suffix}" for kind in write_types]
    return scopes + list(_CONTEXT_SCOPES[persona])


class ProviderPlugin(abc.ABC):
    """What ehrsync knows about one EHR vendor. Instances are stateless; configs are passed in."""

    id: ClassVar[str]
    display_name: ClassVar[str]
    config_model: ClassVar[type[ProviderConfig]]
    base_url_template: ClassVar[str]
    discovery_quirks: ClassVar[tuple[str, ...]] = ()
    auth_methods: ClassVar[tuple[AuthMethod, ...]]
    #: ``auth_methods`` bind: a client auth outside them is refused. False where the server's own discovery
    #: decides (generic SMART servers, vendors.md §7).
    enforces_auth_methods: ClassVar[bool] = True
    #: The longest access-token lifetime (seconds) the vendor documents (Oracle Health: 570 s, vendors.md §3):
    #: a token is taken to expire then at the latest, whatever ``expires_in`` claims, so the early refresh holds
    #: (``token_expiry``). None: ``expires_in`` alone decides (absent: 300 s, SAL-15).
    token_ttl_hint: ClassVar[int | None] = None
    refresh_policy: ClassVar[RefreshPolicy] = RefreshPolicy.ROTATE
    scope_style: ClassVar[ScopeStyle] = ScopeStyle.V2
    #: False: the vendor takes no wildcard scope (``system/*.read``, ``.*``), only each type listed (Oracle Health, §3).
    wildcard_scopes: ClassVar[bool] = True
    required_search_params: ClassVar[Mapping[str, tuple[tuple[str, ...], ...]]] = {}
    #: Parameters every patient search of a type carries besides the patient, where the vendor requires them and
    #: one value covers what ehrsync syncs (Oracle Health's CarePlan: ``category=assess-plan``, vendors.md §3).
    fixed_search_params: ClassVar[Mapping[str, Mapping[str, str]]] = {}
    last_updated_types: ClassVar[frozenset[str]] = frozenset()
    bulk: ClassVar[BulkSupport] = BulkSupport.NONE
    #: The vendor's Bulk kick-off takes the experimental ``_elements`` and ``patient`` parameters (Oracle Health's
    #: does not): without them, group membership is read from whole Patients and new members' older data comes
    #: from a full re-export of the group (BDX-15).
    bulk_member_params: ClassVar[bool] = True
    rate_limit: ClassVar[RateLimit | None] = None
    #: The vendor runs one Bulk export at a time per client and tenant and answers a second kick-off 429 (Oracle
    #: Health, vendors.md §3): the runs of connections sharing a client id and FHIR base get one ``ehrsync/export_slot``
    #: run tag that dagster.yaml limits to one run at once (``engine.export_slots``).
    one_export_per_client: ClassVar[bool] = False
    write_profile: ClassVar[WriteProfile]
    docs_checked_on: ClassVar[dt.date]
    extra_field_hints: ClassVar[Mapping[str, FieldHint]] = {}

    @property
    def field_hints(self) -> dict[str, FieldHint]:
        """Hints for every field of ``config_model`` (keyed by its camelCase alias)."""
        return {**COMMON_FIELD_HINTS, **self.extra_field_hints}

    def parse_config(self, data: Mapping[str, Any]) -> ProviderConfig:
        """Validate admin input; ConfigurationError lists the bad fields (never their values: may be secrets)."""
        try:
            return self.config_model.model_validate(dict(data))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigurationError(f"{self.display_name} configuration invalid: {problems}") from None

    def _config(self, config: ProviderConfig | Mapping[str, Any]) -> ProviderConfig:
        if isinstance(config, self.config_model):
            return config
        if isinstance(config, ProviderConfig):
            raise ConfigurationError(f"{type(config).__name__} is not a {self.display_name} configuration")
        return self.parse_config(config)

    def _typed_config(self, config: ProviderConfig | Mapping[str, Any], kind: type[C]) -> C:
        cfg = self._config(config)
        if not isinstance(cfg, kind):
            raise ConfigurationError(f"{self.display_name} needs a {kind.__name__}")
        return cfg

    def schema_members(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The members of a stored config that this vendor's config schema knows (by name or alias): the store keeps
        members of its own (``key_id``, ``jku``, ``auth_method``) that a schema refusing unknown fields rejects."""
        fields = self.config_model.model_fields
        known = set(fields) | {f.alias for f in fields.values() if f.alias}
        return {k: v for k, v in config.items() if k in known}

    def check_connection_kind(self, config: Mapping[str, Any], *, backend: bool) -> None:
        """Refuse a connection the app registered with the vendor cannot make (ConfigurationError saying why):
        a backend (client_credentials) one, or a user/patient launch (``backend`` False). Most vendors: either."""
        return None

    def token_expiry(self, issued_at: dt.datetime, expires_at: dt.datetime) -> dt.datetime:
        """When ehrsync takes an access token to expire: at ``expires_at`` (from ``expires_in``), but no later than
        ``token_ttl_hint`` after issue, where the vendor documents its tokens expire sooner than it may claim."""
        if self.token_ttl_hint is None:
            return expires_at
        return min(expires_at, issued_at + dt.timedelta(seconds=self.token_ttl_hint))

    def launch_persona(self, config: Mapping[str, Any]) -> Persona:
        """Whose scopes the app's launches ask for by default (``patient/``, ``user/`` or ``system/``): patient-facing
        unless the app's registration with the vendor says otherwise (PointClickCare's appType, vendors.md §5)."""
        return "patient"

    def check_client_auth(self, method: str, alg: str | None = None, *, grant: str | None = None) -> None:
        """Refuse a client auth ``method`` (with its signing ``alg`` for ``private_key_jwt``) the vendor does not
        declare for ``grant`` (``None``: for any grant), naming the vendor, the choice and what is allowed."""
        if not self.enforces_auth_methods:
            return
        method = "none" if method == "public" else method
        allowed = [m for m in self.auth_methods if grant is None or m.grant == grant]
        for declared in allowed:
            if declared.method == method and (method != "private_key_jwt" or alg in declared.signing_algs):
                return
        chosen = f"{method} {alg}" if method == "private_key_jwt" and alg else method
        listed = sorted({_describe(m) for m in allowed}) or ["none"]
        context = f" for {grant}" if grant else ""
        raise AuthMethodNotAllowedError(
            f"{self.display_name} ({self.id}) does not accept client auth {chosen}{context}; "
            f"allowed: {', '.join(listed)} (vendors.md §8 auth_methods)"
        )

    def build_fhir_base_url(self, config: ProviderConfig | Mapping[str, Any]) -> str:
        """The FHIR service root for this tenant (the ``aud`` and the token's only destination)."""
        return self._config(config).fhir_base_url

    def default_scopes(
        self,
        enable_write: bool = False,
        enable_patient_create: bool = False,
        enable_note_create: bool = False,
        *,
        persona: Persona = "patient",
    ) -> list[str]:
        """Read scopes for every synced type; write scopes only with ``enable_write`` and the feature flag,
        and only when the vendor accepts FHIR writes at all."""
        writes: list[str] = []
        if enable_write and self.write_profile.supported:
            if enable_patient_create:
                writes.append("Patient")
            if enable_note_create:
                writes.append("DocumentReference")
        return build_scopes(self.scope_style, persona, SYNCED_RESOURCE_TYPES, tuple(writes))

    def search_plans(
        self,
        resource_type: str,
        patient_id: str | None,
        *,
        config: ProviderConfig | Mapping[str, Any] | None = None,
        granted: ScopeSet | None = None,
    ) -> list[dict[str, str]]:
        """Query parameter sets that together cover ``resource_type`` for one patient (or the population).

        Shared reference types (Practitioner, Location, ...) return ``[]`` for a patient: fetch them by
        reference from the patient's resources instead of searching the whole server. ``granted`` (the scopes
        the server granted; ``None``: unknown) lets a vendor that fans a type out leave out the searches the
        grant does not cover (Epic's Observation categories). Every plan carries ``every_search_params``.
        """
        every = self.every_search_params(config)
        param = patient_search_param(resource_type)
        if patient_id is None:
            return [dict(every)]
        if param is None:
            return []
        return [{param: patient_id, **self.fixed_search_params.get(resource_type, {}), **every}]

    def every_search_params(self, config: ProviderConfig | Mapping[str, Any] | None = None) -> dict[str, str]:
        """Parameters the vendor wants on every search of the tenant, whatever else it asks (athenahealth's
        ``ah-practice``, vendors.md §6): search plans, reference ``_id`` searches and any other search add them."""
        return {}

    def last_updated_params(
        self,
        mark: dt.datetime,
        until: dt.datetime | None = None,
        *,
        overlap: dt.timedelta = DEFAULT_OVERLAP,
        comparator: str = "gt",
    ) -> list[tuple[str, str]]:
        """``_lastUpdated`` filters for an incremental pull from a server-clock ``mark`` (BDX-26/28).

        The overlap window (default 5 min) catches late commits; at most two prefixed values, always with
        a time and zone (Oracle Health's rule, harmless elsewhere). ``comparator`` ``ge`` suits servers
        with coarse timestamps.
        """
        if mark.tzinfo is None or (until is not None and until.tzinfo is None):
            raise ValueError("_lastUpdated marks must be timezone-aware")
        if comparator not in ("gt", "ge"):
            raise ValueError("comparator must be 'gt' or 'ge'")
        params = [("_lastUpdated", f"{comparator}{_instant(mark - overlap)}")]
        if until is not None:
            params.append(("_lastUpdated", f"lt{_instant(until)}"))
        return params

    def supports_last_updated(self, resource_type: str, capabilities: Mapping[str, Any] | None = None) -> bool:
        """Whether ``_lastUpdated`` search can drive incremental sync for ``resource_type``.

        With the server's CapabilityStatement, it decides (vendors change); without it, the vendor default.
        """
        if capabilities is not None:
            return declares_search_param(capabilities, resource_type, "_lastUpdated")
        return resource_type in self.last_updated_types


def _describe(method: AuthMethod) -> str:
    algs = f" {'/'.join(method.signing_algs)}" if method.signing_algs else ""
    return f"{method.method}{algs} ({method.grant})"


def _instant(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
