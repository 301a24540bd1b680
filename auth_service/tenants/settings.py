"""``practice_settings`` as seeded by host apps: ``smartFhir`` (one SMART server) and ``ehrIntegrations``.

Unknown keys are kept (host apps add their own); known keys are type-checked so a typo in a seed file is a
clear error at load time, not a surprise at launch time.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from auth_service.core.return_to import ReturnToError, normalize_origin
from connectors.errors import ConfigurationError, TenantSettingInvalidError
from connectors.http import url_problem
from connectors.tenant_switches import all_on, read_switch, section_switches, shape_problem, switch_problem

__all__ = [
    "MAX_SEED_BYTES",
    "EhrIntegrationsSettings",
    "PracticeSettings",
    "SmartFhirSettings",
    "TenantSeed",
    "TenantSettingInvalidError",
    "load_tenant_seed",
    "stored_practice_settings",
    "tenant_seed",
    "write_scopes_allowed",
]

#: Largest tenant seed file read: thousands of tenants with their provider configs fit well under it.
MAX_SEED_BYTES = 16 * 1024 * 1024


#: Validation context of a seed being written (not of settings read back): the stricter URL rules apply.
_NEW_SEED = {"new_seed": True}
#: Validation context of settings read back from a tenant's row: a switch that is not a boolean is left out of the
#: model (pydantic would read ``"yes"`` as on and refuse ``"maybe"``), and read by ``PracticeSettings.switches_on``.
_STORED = {"stored": True}


class _Camel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    #: This section's switches (aliases): a new seed's are JSON true or false (``_switches``).
    switches: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _switches(cls, data: Any, info: ValidationInfo) -> Any:
        """A new seed's switch that is not true or false is refused, naming it and the value's type: pydantic reads
        ``"yes"`` or ``1`` as true, and ``allowFinalNotes`` (kept as given) was stored whatever it was, then read as
        off by the write-back. Settings stored before this rule still load (the write-back holds a note on one)."""
        if info.context not in (_NEW_SEED, _STORED) or not isinstance(data, Mapping):
            return data
        if info.context == _STORED:  # read by ``PracticeSettings.switches_on``, from the row as it is
            return {k: v for k, v in data.items() if k not in cls.switches or isinstance(v, bool)}
        problems = [switch_problem(name, data[name]) for name in cls.switches if name in data]
        if any(problems):
            raise ValueError("; ".join(p for p in problems if p))
        return data


class SmartFhirSettings(_Camel):
    switches = section_switches("smartFhir")
    enabled: bool = False
    issuer: str | None = None
    fhir_base_url: str | None = Field(default=None, alias="fhirBaseUrl")
    client_id: str | None = Field(default=None, alias="clientId")
    enable_write: bool = Field(default=False, alias="enableWrite")
    enable_patient_create: bool = Field(default=False, alias="enablePatientCreate")
    enable_note_create: bool = Field(default=False, alias="enableNoteCreate")

    @field_validator("issuer", "fhir_base_url")
    @classmethod
    def _absolute(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A new seed's URL must be one urllib can split (``http://[`` or a port past 65535 failed every launch of
        the tenant with a 500); settings stored before that rule still load (their launch fails with a typed error)."""
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an absolute http(s) URL")
        problem = url_problem(value) if value is not None and info.context == _NEW_SEED else None
        if problem is not None:
            raise ValueError(f"must be an absolute http(s) URL with a host and a valid port: it {problem}")
        return value


class EhrIntegrationsSettings(_Camel):
    switches = section_switches("ehrIntegrations")
    enabled_providers: list[str] = Field(default_factory=list, alias="enabledProviders")
    provider_configs: dict[str, dict[str, Any]] = Field(default_factory=dict, alias="providerConfigs")
    enable_write: bool = Field(default=False, alias="enableWrite")
    enable_patient_create: bool = Field(default=False, alias="enablePatientCreate")
    enable_note_create: bool = Field(default=False, alias="enableNoteCreate")
    enable_bulk_export: bool = Field(default=False, alias="enableBulkExport")


class PracticeSettings(_Camel):
    smart_fhir: SmartFhirSettings = Field(default_factory=SmartFhirSettings, alias="smartFhir")
    ehr_integrations: EhrIntegrationsSettings = Field(default_factory=EhrIntegrationsSettings, alias="ehrIntegrations")
    # Origins of the host app the patient pages may link back to (``return_to``); nothing else ever is.
    allowed_return_origins: list[str] = Field(default_factory=list, alias="allowedReturnOrigins", max_length=20)

    @field_validator("allowed_return_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        try:
            return [normalize_origin(v) for v in value]
        except ReturnToError as exc:
            raise ValueError(str(exc).replace("return_to", "each origin")) from None

    #: The tenant row's ``settings`` these were read from (``stored_practice_settings``); None: built from a seed.
    _stored: object = PrivateAttr(default=None)

    def switches_on(self, *names: str) -> bool:
        """Whether every switch of ``names`` is on, by the write-back's rule (connectors/tenant_switches.py): a switch
        is on when a section says ``true``. A stored one that is neither true nor false (``"yes"``, ``null``) is not
        read as on (it would grant what the tenant did not clearly grant) nor as off (it would refuse what it may
        have granted): unless another of ``names`` is off anyway, ``TenantSettingInvalidError`` names it."""
        on, problem = all_on(read_switch(self._read_from(), name) for name in names)
        if problem is not None:
            raise TenantSettingInvalidError(f"the tenant's {problem}; fix the setting (ehrsync auth seed)")
        return on

    def said_true(self, name: str) -> bool:
        """Whether a section says ``true`` for ``name`` (no error: for a decision ``switches_on`` already checked)."""
        return read_switch(self._read_from(), name).on

    def _read_from(self) -> object:
        return self._stored if self._stored is not None else {"practice_settings": self.model_dump(by_alias=True)}

    def setting_problem(self, *names: str) -> str | None:
        """What ``switches_on(*names)`` would refuse with (None: it answers), for the places that list rather than
        decide (a provider left off a list is not granted either)."""
        try:
            self.switches_on(*names)
        except TenantSettingInvalidError as exc:
            return exc.message
        return None


class TenantSeed(_Camel):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = Field(min_length=1, max_length=200)
    practice_settings: PracticeSettings = Field(default_factory=PracticeSettings)


def write_scopes_allowed(service_write: bool, practice: PracticeSettings, feature: str) -> bool:
    """Write scopes are requested only when the service switch, the tenant's ``enableWrite`` and the feature's
    switch (``enableNoteCreate``, ``enablePatientCreate``) are all on (``TenantSettingInvalidError`` when the answer
    hangs on a switch stored as neither true nor false)."""
    return service_write and practice.switches_on("enableWrite", feature)


def stored_practice_settings(stored: object) -> PracticeSettings:
    """A tenant row's ``settings`` as the service reads them. Switches are read by ``switches_on`` from the row as it
    is; any other value the model refuses is a ``TenantSettingInvalidError`` naming the field (never its value), not
    an uncaught ``ValidationError`` (a 500 with a stack). So are settings, or a ``practice_settings``, that are no
    object (a hand edit: ``[]``, ``false``, ``0``, ``[1]``), in the write-back's words (``settings must be an
    object, got an array``): read as ``{}``, a falsy one was every switch off, no provider and no return origin."""
    if (problem := shape_problem(stored)) is not None:
        raise TenantSettingInvalidError(f"the tenant's {problem}; fix the setting (ehrsync auth seed)")
    practice = stored.get("practice_settings") if isinstance(stored, Mapping) else None
    try:
        settings = PracticeSettings.model_validate(practice or {}, context=_STORED)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise TenantSettingInvalidError(f"the tenant's practice_settings are invalid: {fields}") from None
    settings._stored = stored
    return settings


def load_tenant_seed(path: str | Path) -> list[TenantSeed]:
    """Read a seed JSON file (one tenant object or a list of them); errors name the file and the bad field.

    A file with no tenant, or naming one tenant twice (the later entry would silently replace the earlier),
    is refused."""
    file = Path(path)
    try:
        if file.is_file() and file.stat().st_size > MAX_SEED_BYTES:  # never read what no seed needs
            raise ConfigurationError(f"tenant seed file {file} is over the {MAX_SEED_BYTES}-byte limit")
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"tenant seed file {file} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"tenant seed file {file} is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"tenant seed file {file} is not valid JSON (line {exc.lineno})") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise ConfigurationError(f"tenant seed file {file} holds no tenant (an empty list)")
    seeds = [tenant_seed(item, f"tenant seed {file} entry {index}") for index, item in enumerate(items)]
    twice = sorted(i for i, n in Counter(seed.id for seed in seeds).items() if n > 1)
    if twice:
        raise ConfigurationError(f"tenant seed file {file} names tenant(s) {', '.join(twice)} more than once")
    return seeds


def tenant_seed(data: object, where: str) -> TenantSeed:
    """One tenant seed; a bad one is a ``ConfigurationError`` naming ``where`` and each bad field."""
    try:
        return TenantSeed.model_validate(data, context=_NEW_SEED)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"{where}: {fields}") from None
