"""The sandbox's own RS256 key for id_tokens, published at ``/oauth/jwks``, with SAL-33 fault variants."""

from __future__ import annotations

import secrets
import time
from functools import cache
from typing import Any, Literal, get_args

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

#: multi_aud_no_azp / multi_aud_foreign_azp: ``aud`` names our client and another one, with no ``azp`` or with the
#: other one as ``azp`` (OpenID Connect Core 3.1.3.7: a client refuses the foreign ``azp``; the current errata set
#: no longer asks for an ``azp`` when there are several audiences, so the first is accepted: SAL-33)
IdTokenFault = Literal[
    "wrong_aud", "expired", "bad_signature", "rotated_kid", "multi_aud_no_azp", "multi_aud_foreign_azp"
]
ID_TOKEN_FAULTS: tuple[str, ...] = get_args(IdTokenFault)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def _first_key() -> rsa.RSAPrivateKey:
    """The key every sandbox of this process starts with (each under its own ``kid``). Generating a 2048-bit key
    costs ~0.1 s of CPU, and tests start a sandbox hundreds of times per process; a rotation and the
    ``bad_signature`` fault still use a new key each time."""
    return _new_key()


class SigningKey:
    def __init__(self) -> None:
        self._key = _first_key()
        self.kid = secrets.token_hex(8)

    def jwks(self) -> dict[str, Any]:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def rotate(self) -> None:
        """A new key and kid replace the old ones (clients with a cached JWKS must refetch)."""
        self._key = _new_key()
        self.kid = secrets.token_hex(8)

    def id_token(
        self,
        issuer: str,
        client_id: str,
        fhir_user: str,
        nonce: str | None,
        lifetime_s: int,
        fault: IdTokenFault | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": fhir_user.rsplit("/", 1)[-1],
            "aud": "not-" + client_id if fault == "wrong_aud" else client_id,
            "iat": now - 2 * lifetime_s if fault == "expired" else now,
            "exp": now - 60 if fault == "expired" else now + lifetime_s,
            "fhirUser": fhir_user,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if fault in ("multi_aud_no_azp", "multi_aud_foreign_azp"):
            claims["aud"] = [client_id, "another-app"]
            if fault == "multi_aud_foreign_azp":
                claims["azp"] = "another-app"
        if fault == "rotated_kid":
            self.rotate()
        key = _new_key() if fault == "bad_signature" else self._key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})
