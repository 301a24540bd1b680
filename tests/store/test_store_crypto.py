"""AES-256-GCM token cipher (SAL-17): round trip, row binding, tamper, key env errors, rotation."""

from __future__ import annotations

import base64
import os

import pytest

from connectors.errors import ConfigurationError
from store import CipherError, TokenCipher
from store.crypto import derive_kid

SLOT = {"tenant_id": "t1", "owner_id": "c1", "field": "access_token"}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_roundtrip_random_nonce_and_kid() -> None:
    key = os.urandom(32)
    cipher = TokenCipher(key)
    a = cipher.encrypt("secret-token", **SLOT)
    b = cipher.encrypt("secret-token", **SLOT)
    assert a != b  # fresh 96-bit nonce each time
    assert "secret-token" not in a
    assert cipher.decrypt(a, **SLOT) == cipher.decrypt(b, **SLOT) == "secret-token"
    assert cipher.key_id_of(a) == derive_kid(key) == cipher.active_kid
    assert len(base64.urlsafe_b64decode(a.split(".")[2] + "==")) == 12 + len("secret-token") + 16


@pytest.mark.parametrize(
    "moved",
    [
        {"tenant_id": "t2", "owner_id": "c1", "field": "access_token"},
        {"tenant_id": "t1", "owner_id": "c2", "field": "access_token"},
        {"tenant_id": "t1", "owner_id": "c1", "field": "refresh_token"},
    ],
    ids=["other-tenant", "other-connection", "other-field"],
)
def test_ciphertext_moved_to_another_slot_fails(moved: dict[str, str]) -> None:
    cipher = TokenCipher(os.urandom(32))
    sealed = cipher.encrypt("tok", **SLOT)
    with pytest.raises(CipherError, match="tampered or moved"):
        cipher.decrypt(sealed, **moved)


def test_tampered_ciphertext_and_garbage_fail() -> None:
    cipher = TokenCipher(os.urandom(32))
    sealed = cipher.encrypt("tok", **SLOT)
    body = sealed.split(".")[2]
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(CipherError):
        cipher.decrypt(sealed.rsplit(".", 1)[0] + "." + flipped, **SLOT)
    with pytest.raises(CipherError, match="envelope"):
        cipher.decrypt("plain-text-token", **SLOT)


def test_wrong_key_reports_unknown_kid() -> None:
    sealed = TokenCipher(os.urandom(32)).encrypt("tok", **SLOT)
    with pytest.raises(CipherError, match="INTEGRATIONS_TOKEN_ENC_KEYS_OLD"):
        TokenCipher(os.urandom(32)).decrypt(sealed, **SLOT)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "INTEGRATIONS_TOKEN_ENC_KEY is not set"),
        ({"INTEGRATIONS_TOKEN_ENC_KEY": "  "}, "INTEGRATIONS_TOKEN_ENC_KEY is not set"),
        ({"INTEGRATIONS_TOKEN_ENC_KEY": "not base64!!"}, "INTEGRATIONS_TOKEN_ENC_KEY is not valid base64"),
        ({"INTEGRATIONS_TOKEN_ENC_KEY": base64.b64encode(b"x" * 16).decode()}, "exactly 32 bytes"),
        (
            {
                "INTEGRATIONS_TOKEN_ENC_KEY": base64.b64encode(bytes(range(32))).decode(),
                "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": "nokid",
            },
            "INTEGRATIONS_TOKEN_ENC_KEYS_OLD entries",
        ),
        (
            {
                "INTEGRATIONS_TOKEN_ENC_KEY": base64.b64encode(bytes(range(32))).decode(),
                "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": "old:" + base64.b64encode(b"y" * 31).decode(),
            },
            "INTEGRATIONS_TOKEN_ENC_KEYS_OLD entry 'old'",
        ),
    ],
    ids=["missing", "blank", "bad-base64", "short", "old-format", "old-short"],
)
def test_bad_key_environment_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TokenCipher.from_env(env)


@pytest.mark.parametrize("filler", [b"\x00", b"A"])
def test_placeholder_active_key_is_refused(filler: bytes) -> None:
    """A key of one repeated byte (``AAAA...=`` copied from an example) is refused as the auth service refuses it;
    as an old key it is still read, so a deployment can rotate away from one."""
    with pytest.raises(ConfigurationError, match="INTEGRATIONS_TOKEN_ENC_KEY is a placeholder"):
        TokenCipher.from_env({"INTEGRATIONS_TOKEN_ENC_KEY": b64(filler * 32)})
    placeholder = filler * 32
    sealed = TokenCipher(placeholder).encrypt("tok", **SLOT)
    old_keys = "old:" + b64(placeholder)
    rotated = TokenCipher.from_env(
        {"INTEGRATIONS_TOKEN_ENC_KEY": b64(os.urandom(32)), "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": old_keys}
    )
    assert rotated.decrypt(sealed, **SLOT) == "tok"


def test_rotation_window_old_key_still_decrypts() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed_old = TokenCipher.from_env({"INTEGRATIONS_TOKEN_ENC_KEY": b64(old)}).encrypt("tok", **SLOT)
    rotated = TokenCipher.from_env(
        {"INTEGRATIONS_TOKEN_ENC_KEY": b64(new), "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": f"{derive_kid(old)}:{b64(old)}"}
    )
    assert rotated.decrypt(sealed_old, **SLOT) == "tok"
    assert rotated.needs_rotation(sealed_old)
    resealed = rotated.reencrypt(sealed_old, **SLOT)
    assert rotated.key_id_of(resealed) == derive_kid(new)
    assert TokenCipher(new).decrypt(resealed, **SLOT) == "tok"  # old key no longer needed
    assert "tok" not in repr(rotated)


def test_old_key_under_an_operator_label_still_decrypts() -> None:
    """README shows ``INTEGRATIONS_TOKEN_ENC_KEYS_OLD`` as ``kid:base64``; an operator rotating keys names the old
    key as they like ("2025-q4"). Envelopes carry the key's derived id (first 8 hex of its SHA-256), so before,
    every stored token became 'unknown key id' after the rotation deploy and ``ehrsync keys rotate`` stopped at
    the first one: the old key must open what it sealed whatever its label."""
    old, new = os.urandom(32), os.urandom(32)
    sealed_old = TokenCipher.from_env({"INTEGRATIONS_TOKEN_ENC_KEY": b64(old)}).encrypt("tok", **SLOT)
    rotated = TokenCipher.from_env(
        {"INTEGRATIONS_TOKEN_ENC_KEY": b64(new), "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": f"2025-q4:{b64(old)}"}
    )
    assert rotated.decrypt(sealed_old, **SLOT) == "tok"
    assert rotated.key_id_of(rotated.reencrypt(sealed_old, **SLOT)) == derive_kid(new)
    stranger = TokenCipher(os.urandom(32)).encrypt("tok", **SLOT)  # a key nobody configured is still refused
    with pytest.raises(CipherError, match="unknown key id"):
        rotated.decrypt(stranger, **SLOT)


@pytest.mark.parametrize("order", ["reversed", "key as label"])
def test_an_old_key_entry_with_a_key_for_its_label_is_refused_without_the_key(order: str) -> None:
    """``base64key:kid`` (the README's order reversed) or ``keyA:keyB``: the label is a key. Before, the reversed
    entry's error printed it (``entry '<the key>' is not valid base64``) on the CLI and in the service's start-up
    error, and ``keyA:keyB`` was accepted with key A silently unused (and shown as a label in reprs)."""
    key, other = b64(os.urandom(32)), b64(os.urandom(32))
    entry = {"reversed": f"{key}:old", "key as label": f"{key}:{other}"}[order]
    env = {"INTEGRATIONS_TOKEN_ENC_KEY": b64(os.urandom(32)), "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": f"a:{other}, {entry}"}
    with pytest.raises(ConfigurationError, match="INTEGRATIONS_TOKEN_ENC_KEYS_OLD entry 2: its label is a") as info:
        TokenCipher.from_env(env)
    assert key not in str(info.value) and key.rstrip("=") not in str(info.value)
