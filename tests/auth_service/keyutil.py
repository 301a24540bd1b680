"""Key material for tests: generated per run, never committed."""

from __future__ import annotations

import base64
import functools
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def enc_key() -> str:
    return base64.b64encode(os.urandom(32)).decode("ascii")


def rsa_pem(bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


@functools.cache
def service_rsa_pem() -> str:
    """The default ``EHR_JWT_PRIVATE_KEY`` of a test's settings: one per test process (generating a 2048-bit key
    costs ~60 ms of CPU). A test about keys makes its own with ``rsa_pem()``."""
    return rsa_pem()


def ec_pem(curve: ec.EllipticCurve | None = None) -> str:
    key = ec.generate_private_key(curve or ec.SECP384R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
