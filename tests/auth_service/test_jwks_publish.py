"""What our published JWKS must be for an EHR to use it (SAL-30): each key usable by a standard JWK reader, and
one key per ``kid`` across a rotation."""

from __future__ import annotations

import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from auth_service.core.keys import SigningKey, build_jwks, load_private_key, parse_previous_keys, public_jwk
from tests.auth_service.keyutil import ec_pem, rsa_pem

_SHORT = 1 << (47 * 8)  # a P-384 coordinate below this has a leading zero byte


def _ec_key_with_a_short(coordinate: str) -> ec.EllipticCurvePrivateKey:
    """A P-384 key whose ``x`` (or ``y``) has a leading zero byte: about one key in 256."""
    for _ in range(50_000):
        key = ec.generate_private_key(ec.SECP384R1())
        if getattr(key.public_key().public_numbers(), coordinate) < _SHORT:
            return key
    raise AssertionError(f"no P-384 key with a short {coordinate} in 50,000 tries")


def test_sal30_ec_coordinates_are_published_full_length_so_a_jwk_reader_accepts_them() -> None:
    """RFC 7518 §6.2.1.2: ``x`` and ``y`` are the full 48 bytes even when they start with a zero byte; PyJWT (as
    other readers) refuses a shorter one, so an EHR could not verify our assertions with that key."""
    for coordinate in ("x", "y"):
        key = _ec_key_with_a_short(coordinate)
        published = public_jwk(key, f"short-{coordinate}")
        verifier = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(published))
        token = jwt.encode({"iss": "us"}, key, algorithm="ES384", headers={"kid": published["kid"]})
        assert jwt.decode(token, verifier, algorithms=["ES384"]) == {"iss": "us"}


def test_sal30_after_the_switch_a_key_still_listed_as_previous_is_published_once() -> None:
    """The rotation's last step switches to the new key while ``EHR_JWT_PREVIOUS_PUBLIC_KEYS`` may still list its
    public half (published there in the first step): the JWKS names each ``kid`` once, the current key first."""
    new = SigningKey(load_private_key(ec_pem()), "k2")
    old = SigningKey(load_private_key(rsa_pem()), "k1")
    listed: list[dict[str, Any]] = [public_jwk(new.key, "k2"), public_jwk(old.key, "k1")]
    jwks = build_jwks(new, parse_previous_keys(json.dumps({"keys": listed})))
    assert [k["kid"] for k in jwks["keys"]] == ["k2", "k1"]
    assert jwks["keys"][0] == public_jwk(new.key, "k2")
