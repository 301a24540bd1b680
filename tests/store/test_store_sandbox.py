"""A full standalone launch against the sandbox EHR, then cross-process refresh with reuse detection ON.

SAL-08..15, SAL-23/24 (one refresh across processes: a second refresh with the same token would make the
sandbox revoke the whole family), SAL-33 (id_token), SAL-34 (revocation), SAL-38 (no tokens in logs).
"""

from __future__ import annotations

import logging
import multiprocessing
import uuid
from pathlib import Path

import httpx
import pytest

from connectors.smart import (
    JwksCache,
    PublicClientAuth,
    discover,
    introspect_token,
    new_pkce,
    validate_id_token,
)
from sandbox import SandboxServer
from store import AppDatabase, OAuthStateStore, TokenCipher, TokenVault
from tests.store.conftest import add_connection
from tests.store.launch import authorize_code, exchange, register_public_client
from tests.store.workers import refresh_worker


def test_sandbox_launch_then_one_refresh_across_processes(
    sandbox: SandboxServer, tmp_path: Path, key_b64: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox.admin.settings(refresh_mode="reuse_detection")
    client_id = f"store-{uuid.uuid4().hex[:8]}"
    patient = register_public_client(sandbox, client_id)

    url = f"sqlite:///{tmp_path / 'app.db'}"
    db = AppDatabase.from_url(url)
    db.migrate()
    cipher = TokenCipher.from_env({"INTEGRATIONS_TOKEN_ENC_KEY": key_b64})
    http = httpx.Client(timeout=30)
    states = OAuthStateStore(db, cipher)

    cfg = discover(sandbox.fhir_base, http=http)
    pkce = new_pkce()
    state = states.create(
        browser_session="cookie-1",
        tenant_id="t1",
        provider_id="generic",
        issuer=sandbox.fhir_base,
        code_verifier=pkce.verifier,
        nonce="nonce-1",
    )
    code = authorize_code(
        http, sandbox, cfg, client_id=client_id, state=state, code_challenge=pkce.challenge, nonce="nonce-1"
    )

    stored = states.consume(state, browser_session="cookie-1")  # SAL-13: state first
    tokens = exchange(http, cfg, client_id, code, stored.code_verifier)
    assert tokens.patient == patient and tokens.refresh_token
    assert tokens.id_token is not None
    claims = validate_id_token(
        tokens.id_token, issuer=sandbox.fhir_base, client_id=client_id, http=http, nonce=stored.nonce, cache=JwksCache()
    )
    assert claims["fhirUser"]

    auth = PublicClientAuth(client_id)
    add_connection(db, fhir_base=sandbox.fhir_base, connection_id="c1", client_id=client_id)
    vault = TokenVault(db, cipher, http)
    vault.save_token_response("c1", tokens)

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [
        ctx.Process(target=refresh_worker, args=(url, key_b64, "c1", barrier, results, "after_401")) for _ in range(3)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=90) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert {o[0] for o in outcomes} == {"ok"}, outcomes
    fresh = {o[1] for o in outcomes}
    assert len(fresh) == 1 and tokens.access_token not in fresh
    # had two processes refreshed, reuse detection would have revoked the family: the grant still works
    assert vault.force_refresh("c1") not in fresh
    active = introspect_token(
        cfg.introspection_endpoint or "", http=http, client_auth=auth, token=vault.get_access_token("c1")
    )
    assert active.active

    last = vault.get_access_token("c1")
    assert vault.revoke_and_delete("c1") is True  # SAL-34
    assert not introspect_token(cfg.introspection_endpoint or "", http=http, client_auth=auth, token=last).active

    # SAL-38: our loggers at any level, and every INFO+ line except the browser's authorize round trip
    logged = "\n".join(
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(("connectors", "auth_service"))
        or (r.levelno >= logging.INFO and "/oauth/authorize" not in r.getMessage())
    )
    assert "token.refresh" in logged or "grant succeeded" in logged
    for secret in (tokens.access_token, tokens.refresh_token, code, pkce.verifier, state, last):
        assert secret not in logged
    db.dispose()
