"""The auth service's real app over a write-back test world's app database: a person's retry (DWB-63) asked
through ``POST /api/ehr/notes/{id}/retry`` with the world tenant's own API key, then sent by the real engine."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from auth_service.app import create_app
from auth_service.core.config import load_settings
from auth_service.services.tenants import create_api_key
from tests.auth_service.keyutil import service_rsa_pem
from tests.engine.helpers import SyncWorld


@dataclass
class NotesApi:
    client: TestClient
    key: str

    def retry(self, note_id: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.client.post(f"/api/ehr/notes/{note_id}/retry", json=body, headers={"X-API-Key": self.key})

    def state(self, note_id: str) -> dict[str, Any]:
        answer = self.client.get(f"/api/ehr/notes/{note_id}", headers={"X-API-Key": self.key})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


@contextmanager
def notes_api(world: SyncWorld, state_dir: Path) -> Iterator[NotesApi]:
    """The app on the world's database and vault key, and an admin API key of the world's tenant."""
    settings = load_settings(
        INTEGRATIONS_TOKEN_ENC_KEY=base64.b64encode(world.cipher_key).decode(),
        DATABASE_URL=world.env.db.engine.url.render_as_string(hide_password=False),
        EHRSYNC_STATE_DIR=str(state_dir),
        APP_BASE_URL="http://testserver",
        SMART_ISSUER_ALLOWLIST="https://ehr.example/fhir",
        EHR_JWT_PRIVATE_KEY=service_rsa_pem(),
        EHR_JWT_KEY_ID="kid-1",
    )
    with world.env.db.session() as session, session.begin():
        key = create_api_key(session, world.tenant_id, "clinic-admin")
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield NotesApi(client, key)
