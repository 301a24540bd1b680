"""SMART Backend Services for tests: register an RS384 JWKS client in the sandbox and mint tokens."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import jwt
from jwt.algorithms import RSAAlgorithm

from connectors.transport.tls import default_ssl_context
from tests.fixtures.client_keys import backend_client_key

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class BackendClient:
    """A registered backend client that can mint ``system/`` tokens with a fresh signed assertion each time."""

    def __init__(self, sandbox: Any, client_id: str | None = None, scope: str = "system/*.rs") -> None:
        self.client_id = client_id or f"backend-{uuid.uuid4().hex[:8]}"
        self.scope = scope
        self.token_url = f"{sandbox.base_url}/oauth/token"
        self._key = backend_client_key()
        jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": "test-k1", "alg": "RS384", "use": "sig"})
        sandbox.admin.register_client(self.client_id, "backend", jwks={"keys": [jwk]})
        self.minted = 0
        self.issued: list[str] = []

    def assertion(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "exp": now + 240,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm="RS384", headers={"kid": "test-k1"})

    def mint(self) -> str:
        return self.mint_with_expiry()[0]

    def mint_with_expiry(self) -> tuple[str, float]:
        """``(access_token, expires_in)``: the shape MintingTokenSource expects."""
        response = httpx.post(
            self.token_url,
            data={
                "grant_type": "client_credentials",
                "scope": self.scope,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(),
            },
            timeout=10.0,
            verify=default_ssl_context(),
        )
        response.raise_for_status()
        self.minted += 1
        token = str(response.json()["access_token"])
        self.issued.append(token)
        return token, float(response.json().get("expires_in", 300))
