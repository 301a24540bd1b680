"""A backend-services connection whose key lives in the tenant's provider config, as in production.

The engine's test helper keeps its client key in a test-only resolver; the Dagster resources build the vault
the production way (provider config → ``client_auth_from_config``), so these tests register their own key.
"""

from __future__ import annotations

import base64
import uuid

import httpx
from cryptography.hazmat.primitives import serialization

from connectors.smart import discover
from store import TokenCipher, save_provider_config
from store.models import Connection
from tests.engine.helpers import SandboxLike, SyncWorld
from tests.fixtures.client_keys import backend_client_key


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


def connect_backend_with_config(
    world: SyncWorld, sandbox: SandboxLike, *, http: httpx.Client, provider_id: str = "generic"
) -> str:
    """Register a backend client (RS384 JWKS) in the sandbox, store its key in the provider config and add a
    ``backend`` connection; returns the connection id. ``world.env`` (the engine without Dagster) holds the key too."""
    client_id = f"backend-{uuid.uuid4().hex[:10]}"
    key = backend_client_key()
    kid = uuid.uuid4().hex[:8]
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": kid, "alg": "RS384", "use": "sig", "n": _b64(numbers.n), "e": _b64(numbers.e)}
    body = {"client_id": client_id, "client_type": "backend", "jwks": {"keys": [jwk]}, "redirect_uris": []}
    http.post(f"{sandbox.base_url.rstrip('/')}/admin/clients", json=body).raise_for_status()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    token_endpoint = discover(sandbox.fhir_base, http=http).token_endpoint
    connection_id = uuid.uuid4().hex
    with world.env.db.session() as session:
        save_provider_config(
            session,
            TokenCipher(world.cipher_key),
            tenant_id=world.tenant_id,
            provider_id=provider_id,
            config={"auth_method": "private_key_jwt", "private_key_pem": pem, "key_id": kid, "signing_alg": "RS384"},
        )
        session.add(
            Connection(
                id=connection_id,
                tenant_id=world.tenant_id,
                provider_id=provider_id,
                kind="backend",
                fhir_base=sandbox.fhir_base,
                issuer=sandbox.fhir_base,
                client_id=client_id,
                token_endpoint=token_endpoint,
                granted_scopes="system/*.rs",
            )
        )
        session.commit()
    world.clients.save_backend_key(client_id, pem.encode(), kid)  # the engine's own test world can run it too
    return connection_id
