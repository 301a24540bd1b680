"""AES-256-GCM envelope for tokens and secrets at rest (SAL-17), with key rotation.

Envelope: ``v1.<kid>.<base64url(nonce ‖ ciphertext+tag)>``. The associated data binds the envelope to
its tenant, connection (or other owner) and field, so a ciphertext copied to another row fails to open.

``VaultKeys`` is the one parse of the key variables: the cipher and every HMAC key of the auth service (page
cursors, earlier-format links and cookies) derive from the keys' bytes, so how a key's text was set (alphabet,
a trailing newline of a mounted secret) never matters. A placeholder old key (every byte the same: public) opens
stored values only, so a rotation away from it works; values presented from outside never open under it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from connectors.errors import ConfigurationError, EhrSyncError

__all__ = [
    "ENV_ACTIVE_KEY",
    "ENV_OLD_KEYS",
    "CipherError",
    "PlaceholderKeyError",
    "TokenCipher",
    "UnknownKeyIdError",
    "VaultKeys",
    "decode_key",
    "derive_kid",
    "is_placeholder",
    "key_texts",
    "parse_old_keys",
]

ENV_ACTIVE_KEY = "INTEGRATIONS_TOKEN_ENC_KEY"
ENV_OLD_KEYS = "INTEGRATIONS_TOKEN_ENC_KEYS_OLD"
_VERSION = "v1"
_NONCE_BYTES = 12


class CipherError(EhrSyncError):
    """A stored ciphertext cannot be opened: tampered, moved to another row, or its key is gone."""

    code = "cipher_error"


class UnknownKeyIdError(CipherError):
    """The envelope names a key id this process is not configured with: a configuration problem of this
    process (the ciphertext itself may be fine), not a sign of tampering."""

    def __init__(self, message: str, kid: str) -> None:
        super().__init__(message)
        self.kid = kid


class PlaceholderKeyError(CipherError):
    """A value presented from outside (a browser, an API caller) is sealed under a placeholder key: anyone can
    seal with it, so it proves nothing. Stored values still open under it (``TokenCipher.decrypt``)."""

    def __init__(self, message: str, kid: str) -> None:
        super().__init__(message)
        self.kid = kid


def is_placeholder(key: bytes) -> bool:
    """Every byte the same (``AAAA...=``, 32 zero bytes): copied from an example, known to anyone."""
    return len(set(key)) <= 1


def key_texts(key: bytes) -> tuple[bytes, ...]:
    """The key as base64 text in the alphabets the documented generators print, standard first: the secret an
    HMAC key derives from. Made from the key's bytes, so how its text was set (a trailing newline) never matters;
    the standard text is what a key set without whitespace always gave (earlier values still verify)."""
    standard, urlsafe = base64.b64encode(key), base64.urlsafe_b64encode(key)
    return (standard,) if standard == urlsafe else (standard, urlsafe)


def derive_kid(key: bytes) -> str:
    """Stable, non-secret key id: first 8 hex digits of SHA-256(key)."""
    return hashlib.sha256(key).hexdigest()[:8]


def decode_key(value: str, variable: str) -> bytes:
    """32 bytes from base64 text (either alphabet, surrounding whitespace ignored), or an error naming ``variable``."""
    try:
        # standard or URL-safe alphabet: README and TROUBLESHOOTING show one generator each
        key = base64.b64decode(value.strip().replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(f"{variable} is not valid base64 (expected base64 of exactly 32 bytes)") from exc
    if len(key) != 32:
        raise ConfigurationError(f"{variable} must be base64 of exactly 32 bytes (AES-256), got {len(key)} bytes")
    return key


def parse_old_keys(value: str) -> dict[str, bytes]:
    """The keys of ``INTEGRATIONS_TOKEN_ENC_KEYS_OLD`` (``kid:b64,...``) by the operator's label."""
    old: dict[str, bytes] = {}
    for position, item in enumerate(filter(None, (part.strip() for part in value.split(","))), start=1):
        kid, sep, b64 = item.partition(":")
        if not sep or not kid.strip() or not b64.strip():
            raise ConfigurationError(f"{ENV_OLD_KEYS} entries must look like 'kid:base64key' (comma-separated)")
        if _is_key_text(kid):  # ``base64key:kid`` reversed: named by position, as the label would print the key
            raise ConfigurationError(
                f"{ENV_OLD_KEYS} entry {position}: its label is a base64 key; entries look like 'kid:base64key', "
                "the label (a short name of your choice) first"
            )
        old[kid.strip()] = decode_key(b64, f"{ENV_OLD_KEYS} entry {kid.strip()!r}")
    return old


def _is_key_text(text: str) -> bool:
    try:
        decode_key(text, "")
    except ConfigurationError:
        return False
    return True


@dataclass(frozen=True, repr=False)
class VaultKeys:
    """The vault keys as configured, parsed once: what the cipher and every HMAC key derive from."""

    active: bytes
    old: Mapping[str, bytes]  # by the operator's label
    # the active key's text exactly as set: earlier versions keyed their HMACs on it, so values they signed (page
    # cursors, earlier-format links and cookies) still verify; verification only, never a signing key
    active_as_set: bytes = b""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VaultKeys:
        """Active key from ``INTEGRATIONS_TOKEN_ENC_KEY`` (never a placeholder); old ones from ``..._KEYS_OLD``."""
        env = os.environ if environ is None else environ
        raw = env.get(ENV_ACTIVE_KEY, "")
        if not raw.strip():
            from settings import VAULT_KEY_HINT  # the one wording every process uses

            raise ConfigurationError(f"{ENV_ACTIVE_KEY} is not set: {VAULT_KEY_HINT}")
        active = decode_key(raw, ENV_ACTIVE_KEY)
        if is_placeholder(active):  # "AAAA...=": copied from an example; the auth service refuses it too
            raise ConfigurationError(
                f"{ENV_ACTIVE_KEY} is a placeholder (every byte the same): generate a random 32-byte key"
            )
        # an old key may be one (rotating away from a placeholder must work): it opens stored values only
        return cls(active, parse_old_keys(env.get(ENV_OLD_KEYS, "")), raw.encode("utf-8"))

    def cipher(self) -> TokenCipher:
        return TokenCipher(self.active, old_keys=self.old)

    @property
    def placeholder_kids(self) -> tuple[str, ...]:
        """Key ids of the placeholder old keys (non-secret), for the start-up warning."""
        return tuple(sorted({derive_kid(key) for key in self.old.values() if is_placeholder(key)}))

    @property
    def active_texts(self) -> tuple[bytes, ...]:
        """HMAC secrets of the active key: the first signs, each verifies (``key_texts``, then the text as set)."""
        return tuple(dict.fromkeys([*key_texts(self.active), *filter(None, [self.active_as_set])]))

    @property
    def verifying_texts(self) -> tuple[bytes, ...]:
        """HMAC secrets a value signed before a rotation may carry: the active key's, then each old key's that
        is not a placeholder (one anyone can sign with proves nothing)."""
        old = [text for key in self.old.values() if not is_placeholder(key) for text in key_texts(key)]
        return tuple(dict.fromkeys([*self.active_texts, *old]))

    def __repr__(self) -> str:
        return f"VaultKeys(active={derive_kid(self.active)!r}, old={sorted(self.old)!r})"


def _aad(kid: str, tenant_id: str, owner_id: str, field: str) -> bytes:
    return json.dumps([_VERSION, kid, tenant_id, owner_id, field], separators=(",", ":")).encode("utf-8")


class TokenCipher:
    """Encrypts with the active key; decrypts with the active or any old key (rotation window)."""

    def __init__(
        self, active_key: bytes, *, active_kid: str | None = None, old_keys: Mapping[str, bytes] | None = None
    ):
        if len(active_key) != 32:
            raise ConfigurationError("token encryption key must be exactly 32 bytes (AES-256)")
        self._active_kid = active_kid or derive_kid(active_key)
        self._keys: dict[str, AESGCM] = {}
        self._placeholders: set[str] = set()
        for kid, key in (old_keys or {}).items():
            if len(key) != 32:
                raise ConfigurationError(f"old token encryption key {kid!r} must be exactly 32 bytes")
            # envelopes name the key id it had while active: its derived id, whatever label the operator gave it
            self._keys[kid] = self._keys[derive_kid(key)] = AESGCM(key)
            if is_placeholder(key):
                self._placeholders |= {kid, derive_kid(key)}
        self._keys[self._active_kid] = AESGCM(active_key)
        self._placeholders.discard(self._active_kid)
        if is_placeholder(active_key):  # only built directly (from_env refuses it): tests, a value's forger
            self._placeholders.add(self._active_kid)
        for kid in self._keys:
            if not kid or "." in kid or len(kid) > 64:
                raise ConfigurationError(f"token key id {kid!r} must be 1-64 characters without '.'")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TokenCipher:
        """Active key from ``INTEGRATIONS_TOKEN_ENC_KEY``; old ones from ``..._KEYS_OLD`` (``kid:b64,...``)."""
        return VaultKeys.from_env(environ).cipher()

    @classmethod
    def generate_key(cls) -> str:
        """A new random key, base64-encoded as the environment variable expects."""
        return base64.b64encode(secrets.token_bytes(32)).decode("ascii")

    @property
    def active_kid(self) -> str:
        return self._active_kid

    @property
    def known_kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def encrypt(self, plaintext: str, *, tenant_id: str, owner_id: str, field: str) -> str:
        """Seal ``plaintext`` for one (tenant, owner, field) slot with a fresh 96-bit nonce."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        kid = self._active_kid
        sealed = self._keys[kid].encrypt(nonce, plaintext.encode("utf-8"), _aad(kid, tenant_id, owner_id, field))
        body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{_VERSION}.{kid}.{body}"

    def decrypt(self, envelope: str, *, tenant_id: str, owner_id: str, field: str) -> str:
        kid, body = self._split(envelope)
        aead = self._keys.get(kid)
        if aead is None:
            message = f"ciphertext for {field!r} uses unknown key id {kid!r}: add it to {ENV_OLD_KEYS}"
            raise UnknownKeyIdError(message, kid)
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(kid, tenant_id, owner_id, field))
        except (InvalidTag, ValueError, binascii.Error) as exc:
            raise CipherError(f"ciphertext for {field!r} failed authentication (tampered or moved)") from exc
        return plain.decode("utf-8")

    def open_presented(self, envelope: str, *, tenant_id: str, owner_id: str, field: str) -> str:
        """``decrypt`` for a value presented from outside (a browser's cookie or form, a link): one sealed under
        a placeholder key is refused with ``PlaceholderKeyError``, whatever it holds."""
        kid = self.key_id_of(envelope)
        if kid in self._placeholders:
            message = f"value for {field!r} is sealed under key id {kid!r}, a placeholder key anyone can seal with"
            raise PlaceholderKeyError(message, kid)
        return self.decrypt(envelope, tenant_id=tenant_id, owner_id=owner_id, field=field)

    def key_id_of(self, envelope: str) -> str:
        return self._split(envelope)[0]

    def needs_rotation(self, envelope: str) -> bool:
        return self.key_id_of(envelope) != self._active_kid

    def reencrypt(self, envelope: str, *, tenant_id: str, owner_id: str, field: str) -> str:
        """Open with whatever key sealed it and seal again with the active key."""
        plain = self.decrypt(envelope, tenant_id=tenant_id, owner_id=owner_id, field=field)
        return self.encrypt(plain, tenant_id=tenant_id, owner_id=owner_id, field=field)

    @staticmethod
    def _split(envelope: str) -> tuple[str, str]:
        parts = envelope.split(".")
        if len(parts) != 3 or parts[0] != _VERSION or not parts[1] or not parts[2]:
            raise CipherError("value is not a ehrsync v1 ciphertext envelope")
        return parts[1], parts[2]

    def __repr__(self) -> str:
        return f"TokenCipher(active_kid={self._active_kid!r}, kids={sorted(self._keys)!r})"
