"""Provider configuration a clinic admin fills in (pydantic v2; camelCase on the wire, secrets as SecretStr)."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.errors import ConfigurationError
from connectors.http import normalize_base_url

__all__ = [
    "AthenaConfig",
    "CernerConfig",
    "EcwConfig",
    "EpicConfig",
    "GenericConfig",
    "PccConfig",
    "ProviderConfig",
    "check_https_url",
]

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}\Z")


def check_https_url(value: str) -> str:
    """https, or http only on loopback; returned without a trailing slash. ValueError names the problem."""
    try:
        return normalize_base_url(value)
    except ConfigurationError as exc:
        raise ValueError(exc.message) from None


#: Client ids issued by dynamic registration can be signed JWTs of several KB; never a file name anywhere.
MAX_CLIENT_ID_LENGTH = 8192


class ProviderConfig(BaseModel):
    """Fields every vendor needs. ``privateKey`` is a PEM (RSA or EC) used for ``private_key_jwt``."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True, str_strip_whitespace=True)

    fhir_base_url: str = Field(alias="fhirBaseUrl")
    client_id: str = Field(alias="clientId", min_length=1, max_length=MAX_CLIENT_ID_LENGTH)
    client_secret: SecretStr | None = Field(default=None, alias="clientSecret")
    private_key: SecretStr | None = Field(default=None, alias="privateKey")
    kid: str | None = Field(default=None, max_length=256)
    jwks_url: str | None = Field(default=None, alias="jwksUrl")

    @field_validator("fhir_base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return check_https_url(value)

    @field_validator("jwks_url")
    @classmethod
    def _jwks(cls, value: str | None) -> str | None:
        if value is None:
            return None
        checked = check_https_url(value)  # first: urllib cannot split "http://[" for its query
        if urlsplit(value).query:
            raise ValueError("jwksUrl must not carry a query string")
        return checked

    @field_validator("private_key")
    @classmethod
    def _pem(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        # cryptography loads here, when a key is checked: listing connections needs only the vendors' rules
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(value.get_secret_value().encode(), password=None)
        except (ValueError, TypeError):
            raise ValueError("privateKey is not an unencrypted PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError("privateKey must be an RSA or EC key (RS384 / ES384)")
        return value

    @model_validator(mode="after")
    def _kid_with_key(self) -> ProviderConfig:
        if self.private_key is not None and not self.kid:
            raise ValueError("kid is required when privateKey is set (it names the key in the JWKS)")
        return self


class EpicConfig(ProviderConfig):
    pass


class CernerConfig(ProviderConfig):
    fhir_base_url: str = Field(default="https://fhir-ehr.cerner.com", alias="fhirBaseUrl")
    tenant_id: str = Field(alias="tenantId")

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not _GUID.match(value):
            raise ValueError("tenantId must be the Oracle Health tenant GUID")
        return value.lower()


class EcwConfig(ProviderConfig):
    practice_code: str = Field(alias="practiceCode")

    @field_validator("practice_code")
    @classmethod
    def _code(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError("practiceCode must be letters, digits, '-' or '_'")
        return value


class PccConfig(ProviderConfig):
    pcc_tenant_id: str = Field(alias="pccTenantId")
    app_type: Literal["provider", "patient", "bulk"] = Field(default="provider", alias="appType")

    @field_validator("pcc_tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError("pccTenantId must be letters, digits, '-' or '_'")
        return value


class AthenaConfig(ProviderConfig):
    fhir_base_url: str = Field(default="https://api.preview.platform.athenahealth.com/fhir/r4", alias="fhirBaseUrl")
    practice_id: str = Field(alias="practiceId")

    @field_validator("practice_id")
    @classmethod
    def _practice(cls, value: str) -> str:
        if not value.isdigit() or len(value) > 12:
            raise ValueError("practiceId must be the numeric athenahealth practice id")
        return value


class GenericConfig(ProviderConfig):
    pass
