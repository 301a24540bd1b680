"""Provider configuration rows with encrypted secret members, and the client auth they describe.

Secret members (``client_secret``, ``private_key_pem``) are stored as ``{"$enc": <envelope>}`` sealed to
(tenant, ``provider:<id>``, member name). Keys may be snake_case or the camelCase used by the seed format.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.errors import ConfigurationError
from connectors.smart import ClientAuth, JwtClientAuth, PublicClientAuth, SecretClientAuth, load_signing_key
from store.crypto import TokenCipher
from store.models import ProviderConfig, utcnow

__all__ = [
    "DEFAULT_PRIVATE_KEY_ENV",
    "SECRET_FIELDS",
    "client_auth_from_config",
    "decrypt_config",
    "load_provider_config",
    "reseal_config",
    "save_provider_config",
]

SECRET_FIELDS = ("client_secret", "private_key_pem")
DEFAULT_PRIVATE_KEY_ENV = "EHR_JWT_PRIVATE_KEY"
DEFAULT_KEY_ID_ENV = "EHR_JWT_KEY_ID"
_ALIASES = {
    "clientSecret": "client_secret",
    "privateKeyPem": "private_key_pem",
    "privateKey": "private_key_pem",
    "private_key": "private_key_pem",
    "privateKeyEnv": "private_key_env",
    "clientId": "client_id",
    "keyId": "key_id",
    "kid": "key_id",
    "signingAlg": "signing_alg",
    "alg": "signing_alg",
    "authMethod": "auth_method",
    "jwksUrl": "jku",
    "jwks_url": "jku",
}
_ENC = "$enc"


def _owner(provider_id: str) -> str:
    return f"provider:{provider_id}"


def _canonical(config: Mapping[str, Any]) -> dict[str, Any]:
    return {_ALIASES.get(k, k): v for k, v in config.items()}


def save_provider_config(
    session: Session,
    cipher: TokenCipher,
    *,
    tenant_id: str,
    provider_id: str,
    config: Mapping[str, Any],
) -> ProviderConfig:
    """Insert or replace a tenant's config for one provider, sealing secret members."""
    stored: dict[str, Any] = {}
    for key, value in _canonical(config).items():
        if key in SECRET_FIELDS and value is not None:
            if not isinstance(value, str):
                raise ConfigurationError(f"provider config member {key!r} must be a string")
            stored[key] = {_ENC: cipher.encrypt(value, tenant_id=tenant_id, owner_id=_owner(provider_id), field=key)}
        else:
            stored[key] = value
    row = session.scalar(
        select(ProviderConfig).where(ProviderConfig.tenant_id == tenant_id, ProviderConfig.provider_id == provider_id)
    )
    if row is None:
        row = ProviderConfig(tenant_id=tenant_id, provider_id=provider_id, config=stored)
        session.add(row)
    else:
        row.config = stored
        row.updated_at = utcnow()
    session.flush()
    return row


def decrypt_config(cipher: TokenCipher, row: ProviderConfig) -> dict[str, Any]:
    """The row's config with secret members opened (keep the result in memory only)."""
    out: dict[str, Any] = {}
    for key, value in row.config.items():
        if isinstance(value, dict) and set(value) == {_ENC}:
            out[key] = cipher.decrypt(value[_ENC], tenant_id=row.tenant_id, owner_id=_owner(row.provider_id), field=key)
        else:
            out[key] = value
    return out


def load_provider_config(session: Session, cipher: TokenCipher, tenant_id: str, provider_id: str) -> dict[str, Any]:
    """Decrypted config, or ``{}`` when the tenant has none for this provider."""
    row = session.scalar(
        select(ProviderConfig).where(ProviderConfig.tenant_id == tenant_id, ProviderConfig.provider_id == provider_id)
    )
    return decrypt_config(cipher, row) if row is not None else {}


def reseal_config(cipher: TokenCipher, row: ProviderConfig) -> int:
    """Re-encrypt secret members sealed with an old key; returns how many changed."""
    changed = 0
    new = dict(row.config)
    for key, value in row.config.items():
        if isinstance(value, dict) and set(value) == {_ENC} and cipher.needs_rotation(value[_ENC]):
            sealed = cipher.reencrypt(value[_ENC], tenant_id=row.tenant_id, owner_id=_owner(row.provider_id), field=key)
            new[key] = {_ENC: sealed}
            changed += 1
    if changed:
        row.config = new
    return changed


def _pem_text(value: str | None, variable: str) -> str | None:
    """``EHR_JWT_PRIVATE_KEY`` (or ``private_key_env``) holds PEM text or a path to a PEM file (README)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text
    path = Path(text).expanduser()
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        raise ConfigurationError(f"{variable} is neither PEM text nor a path to a readable PEM file") from None


def _env_key_id(env: Mapping[str, str]) -> str | None:
    """``EHR_JWT_KEY_ID`` as the auth service reads it: surrounding whitespace stripped, blank is unset."""
    return (env.get(DEFAULT_KEY_ID_ENV) or "").strip() or None


def _jwt_client_auth(
    cfg: Mapping[str, Any],
    env: Mapping[str, str],
    key_env: str,
    *,
    client_id: str,
    clock: Callable[[], float] | None,
) -> ClientAuth:
    """``private_key_jwt`` from the config's own key, else the service key of ``key_env``. With the service key
    (``EHR_JWT_PRIVATE_KEY``) the kid defaults to ``EHR_JWT_KEY_ID`` and, as for any key, the alg to the one the
    key is for (EC: ES384, RSA: RS384): the auth service signs with these, and the pipelines must sign alike."""
    own = cfg.get("private_key_pem")
    pem = own or _pem_text(env.get(key_env), key_env)
    if not pem:
        raise ConfigurationError(f"private_key_jwt needs 'private_key_pem' in the provider config or {key_env}")
    kid = cfg.get("key_id") or (None if own or key_env != DEFAULT_PRIVATE_KEY_ENV else _env_key_id(env))
    if not isinstance(kid, str) or not kid:
        raise ConfigurationError(
            f"private_key_jwt needs 'key_id' (the JWKS kid) in the provider config or {DEFAULT_KEY_ID_ENV}"
        )
    key = load_signing_key(str(pem))
    alg = cfg.get("signing_alg") or ("ES384" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS384")
    kwargs: dict[str, Any] = {}
    if clock is not None:
        kwargs["clock"] = clock
    return JwtClientAuth(client_id, key, kid, alg=str(alg), jku=cfg.get("jku") or None, **kwargs)


def client_auth_from_config(
    config: Mapping[str, Any],
    *,
    client_id: str,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] | None = None,
) -> ClientAuth:
    """Build the ClientAuth a config describes (SAL-27..29).

    ``auth_method``: ``none``/``public``, ``client_secret_basic`` or ``private_key_jwt``; when absent it is
    inferred (private key or kid → JWT, secret → Basic, else public). The private key comes from
    ``private_key_pem`` or the environment variable named by ``private_key_env`` (default ``EHR_JWT_PRIVATE_KEY``).
    """
    cfg = _canonical(config)
    env = os.environ if environ is None else environ
    method = cfg.get("auth_method")
    key_env = str(cfg.get("private_key_env") or DEFAULT_PRIVATE_KEY_ENV)
    if method is None:
        if cfg.get("private_key_pem") or cfg.get("key_id"):  # as the auth service reads it (configured_auth_method)
            method = "private_key_jwt"
        elif cfg.get("client_secret"):
            method = "client_secret_basic"
        else:
            method = "none"
    if method in ("none", "public"):
        return PublicClientAuth(client_id)
    if method == "client_secret_basic":
        secret = cfg.get("client_secret")
        if not isinstance(secret, str) or not secret:
            raise ConfigurationError("client_secret_basic needs 'client_secret' in the provider config")
        return SecretClientAuth(client_id, secret)
    if method == "private_key_jwt":
        return _jwt_client_auth(cfg, env, key_env, client_id=client_id, clock=clock)
    raise ConfigurationError(f"unknown auth_method {method!r} (use none, client_secret_basic or private_key_jwt)")
