"""The code exchange succeeded, then storing the connection with its tokens failed: the EHR's tokens are revoked
there (SAL-34), not left valid at the EHR and kept nowhere, and the patient is answered as before.

The failure is a real one of the app database: on SQLite a trigger refuses the tokens' row as it is inserted; on
PostgreSQL a deferred constraint trigger refuses it at COMMIT, the commit itself failing. Over the real service
(uvicorn) and the sandbox EHR, whose revocation endpoint marks the tokens it revokes (read from its state).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.auth_service.ehr import Service, running_service, smart_practice
from tests.auth_service.logcapture import capture_all_logs
from tests.auth_service.test_callback_interrupted import NOTHING_SHARED, _start, _stored
from tests.auth_service.test_callback_reload import HTML, callback_url, token_requests

SQLITE_REFUSAL = (
    "CREATE TRIGGER refuse_tokens BEFORE INSERT ON tokens BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END",
)
POSTGRES_REFUSAL_AT_COMMIT = (
    "CREATE FUNCTION refuse_tokens() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN RAISE EXCEPTION 'could not write to file'; END $$",
    "CREATE CONSTRAINT TRIGGER refuse_tokens AFTER INSERT ON tokens DEFERRABLE INITIALLY DEFERRED"
    " FOR EACH ROW EXECUTE FUNCTION refuse_tokens()",
)


def _issued(sandbox: Any, client_id: str) -> dict[str, tuple[str, bool]]:
    """The tokens the sandbox issued to ``client_id``: each one's kind and whether it was revoked."""
    with sandbox.state.auth.lock:
        tokens = list(sandbox.state.auth.tokens.items())
    return {token: (rec.kind, rec.revoked) for token, rec in tokens if rec.client_id == client_id}


def _client_id() -> str:
    """Unique: the sandbox keeps the tokens of every test in the session."""
    return f"unstored-{uuid.uuid4().hex[:8]}"


def _tokens_not_stored_are_revoked(svc: Service, sandbox: Any, client_id: str, refusal: tuple[str, ...]) -> None:
    with svc.ctx.db.engine.begin() as conn:
        for statement in refusal:
            conn.execute(text(statement))
    _start(sandbox, svc, client_id)
    with capture_all_logs() as logs, httpx.Client(timeout=30, headers=HTML) as browser:
        url = callback_url(svc, browser)
        first = browser.get(url)
        reload = browser.get(url, headers={"Accept": "application/json"})
    assert first.status_code == 500 and NOTHING_SHARED in first.text, first.text[:800]  # answered as before
    assert reload.status_code == 500 and reload.json()["error"] == "sign_in_interrupted"
    assert token_requests(sandbox) == 1 and _stored(svc) == []
    issued = _issued(sandbox, client_id)
    assert sorted(kind for kind, _ in issued.values()) == ["access", "refresh"]
    assert all(revoked for _, revoked in issued.values()), issued.values()  # no longer valid at the EHR
    assert "revoked at the EHR (refresh_token, access_token)" in logs.text
    assert not any(token in logs.text for token in issued)


def test_tokens_whose_storing_the_database_refuses_are_revoked_at_the_ehr(make_settings: Any, sandbox: Any) -> None:
    client_id = _client_id()
    with running_service(make_settings, sandbox, smart_practice(sandbox, client_id)) as svc:
        _tokens_not_stored_are_revoked(svc, sandbox, client_id, SQLITE_REFUSAL)


@pytest.mark.postgres
def test_tokens_whose_commit_fails_are_revoked_at_the_ehr_on_postgres(
    make_settings: Any, sandbox: Any, postgres_url: str
) -> None:
    client_id = _client_id()
    practice = smart_practice(sandbox, client_id)
    with running_service(make_settings, sandbox, practice, DATABASE_URL=postgres_url) as svc:
        _tokens_not_stored_are_revoked(svc, sandbox, client_id, POSTGRES_REFUSAL_AT_COMMIT)
