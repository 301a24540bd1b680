"""One connection's client authentication refused (``invalid_client``) pauses every other active connection using the
same client credentials, on SQLite and PostgreSQL, against a real token server whose registered secret was rotated.

Client credentials belong to the app registration, not to one connection: before, each of the app's N connections
sent its own failing authentication (N refused requests; some EHRs lock a client after repeated failures) before it
ended ``client_rejected``. Now the first refusal marks them all, each with a ``connection.paused`` audit row naming the
refused connection and when (no secret), and their next use answers the state without a request. Connections of
another provider config, another token endpoint, or in another state are left alone (``store._same_client``)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from store import AppDatabase, TokenCipher, TokenVault, refresh_idle_grants, save_provider_config
from store.errors import ClientRejectedError
from store.models import AuditEvent, Connection, ConnectionStatus
from tests.connectors.smart.keys import pem, rsa_key
from tests.store.conftest import add_connection
from tests.store.test_store_vault import make_vault, status, token
from tests.store.tokenserver import RunningTokenServer

OLD, NEW = "secret-before-rotation", "secret-after-rotation"
APP = ("c1", "c2", "c3")  # the app's three patient connections


def _config(db: AppDatabase, cipher: TokenCipher, provider_id: str, config: dict[str, str]) -> None:
    with db.session() as s, s.begin():
        save_provider_config(s, cipher, tenant_id="t1", provider_id=provider_id, config=config)


def _secret(secret: str) -> dict[str, str]:
    return {"auth_method": "client_secret_basic", "client_secret": secret}


def _patient(vault: TokenVault, db: AppDatabase, server: RunningTokenServer, cid: str, **where: str) -> None:
    """A patient connection due for a refresh (30 s left), its refresh token ``rt-<cid>`` valid at the server."""
    add_connection(db, connection_id=cid, fhir_base=server.fhir_base, token_endpoint=server.token_endpoint, **where)
    server.state.valid_refresh.add(f"rt-{cid}")
    vault.save_token_response(cid, token(f"at-{cid}", f"rt-{cid}", 3600, left=30))


def _set_status(db: AppDatabase, cid: str, value: str) -> None:
    with db.session() as s, s.begin():
        conn = s.get(Connection, cid)
        assert conn is not None
        conn.status = value


def _paused_events(db: AppDatabase) -> dict[str, dict[str, object]]:
    with db.session() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "connection.paused"))
        return {str(e.connection_id): {"outcome": e.outcome, **(e.detail or {})} for e in events}


def test_the_first_refusal_pauses_every_active_connection_of_the_same_client_with_one_request(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    vault = make_vault(db, cipher)
    for cid in APP:
        _patient(vault, db, token_server, cid)
    _patient(vault, db, token_server, "other-provider", provider_id="other")  # its own config: the new secret
    _patient(vault, db, token_server, "other-endpoint")
    with db.session() as s, s.begin():  # same client, another authorization server: its refusal is not ours
        conn = s.get(Connection, "other-endpoint")
        assert conn is not None
        conn.token_endpoint = f"{token_server.base_url}/elsewhere/token"
    _patient(vault, db, token_server, "reauth")
    _set_status(db, "reauth", ConnectionStatus.NEEDS_REAUTH)
    _config(db, cipher, "generic", _secret(OLD))
    _config(db, cipher, "other", _secret(NEW))
    token_server.state.client_secret = NEW  # rotated at the EHR; the generic config still holds the old one

    with pytest.raises(ClientRejectedError, match="refused the client's authentication"):
        vault.get_access_token("c1")
    assert token_server.state.count("refresh_token") == 1  # one failed authentication for the whole app
    assert [status(db, cid) for cid in APP] == ["client_rejected"] * 3
    assert status(db, "other-provider") == status(db, "other-endpoint") == "active"
    assert status(db, "reauth") == "needs_reauth"  # other states are not touched

    paused = _paused_events(db)
    assert sorted(paused) == ["c2", "c3"]
    with db.session() as s:
        refused = s.get(Connection, "c1")
        assert refused is not None
        refused_at = refused.updated_at
    for detail in paused.values():
        assert detail["outcome"] == "client_rejected" and detail["reason"] == "same_client_refused"
        assert detail["refused_connection_id"] == "c1" and detail["error_code"] == "invalid_client"
        assert datetime.fromisoformat(str(detail["refused_at"])) == refused_at
        assert detail["auth_method"] == "client_secret_basic" and "client secret" in str(detail["check"])
        assert not any(secret in str(detail) for secret in (OLD, NEW, "rt-c2", "at-c2", "rt-c3"))

    for cid in ("c2", "c3"):  # their next syncs send nothing; the state says why and how to retry all of them
        with pytest.raises(ClientRejectedError, match=r"paused without a request: connection c1, .*same client") as e:
            vault.get_access_token(cid)
        assert "POST /api/integrations/admin/providers/generic/reactivate" in str(e.value)
    assert token_server.state.count("refresh_token") == 1
    vault.get_access_token("other-provider")  # another provider config's credentials still work
    assert token_server.state.count("refresh_token") == 2 and status(db, "other-provider") == "active"


def test_each_paused_connection_is_reactivated_with_its_own_kept_refresh_token(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """After the fix, ``TokenVault.reactivate`` of a paused connection refreshes with its own stored refresh token and
    makes it active; before the fix, retrying one is refused once and pauses nothing more."""
    vault = make_vault(db, cipher)
    for cid in APP:
        _patient(vault, db, token_server, cid)
    _config(db, cipher, "generic", _secret(OLD))
    token_server.state.client_secret = NEW
    with pytest.raises(ClientRejectedError):
        vault.get_access_token("c2")
    with pytest.raises(ClientRejectedError):
        vault.reactivate("c1")  # nothing fixed yet: refused again, one request
    assert token_server.state.count("refresh_token") == 2
    _config(db, cipher, "generic", _secret(NEW))
    for cid in APP:
        vault.reactivate(cid)
        assert token_server.state.grants[-1]["form"]["refresh_token"] == f"rt-{cid}"
    assert [status(db, cid) for cid in APP] == ["active"] * 3


def test_keepalive_sends_one_request_for_the_app_and_reports_every_paused_connection(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """The keepalive job over the app's three idle grants: the first refresh refused pauses the other two, which it
    reports under ``client_rejected`` without a request (before: three failed authentications)."""
    vault = make_vault(db, cipher)
    for cid in APP:
        _patient(vault, db, token_server, cid)
    _config(db, cipher, "generic", _secret(OLD))
    token_server.state.client_secret = NEW
    report = refresh_idle_grants(db, vault, idle_for=timedelta(minutes=5))
    assert sorted(report.client_rejected) == list(APP) and not report.failed and not report.refreshed
    assert token_server.state.count("refresh_token") == 1


def _backend(db: AppDatabase, cid: str, server: RunningTokenServer) -> None:
    add_connection(
        db,
        connection_id=cid,
        kind="backend",
        scopes="system/*.rs",
        fhir_base=server.fhir_base,
        token_endpoint=server.token_endpoint,
    )


@pytest.mark.parametrize(("refusal", "spreads"), [("invalid_client", True), ("invalid_scope", False)])
def test_a_backend_grant_refused_for_the_client_pauses_the_others_and_a_scope_refusal_does_not(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer, refusal: str, spreads: bool
) -> None:
    """A backend connection's client_credentials grant refused ``invalid_client`` (the client's key not registered)
    pauses the app's other connections, a patient one too (it authenticates with the same key); ``invalid_scope``
    refuses what that connection asked for, not the credentials: it stays its own."""
    vault = make_vault(db, cipher)
    _backend(db, "b1", token_server)
    _backend(db, "b2", token_server)
    key = {"auth_method": "private_key_jwt", "private_key_pem": pem(rsa_key()), "key_id": "kid-1"}
    _config(db, cipher, "generic", key)
    assert vault.get_access_token("b2") == "at-1"
    _patient(vault, db, token_server, "p1")
    token_server.state.client_refusal = (401 if spreads else 400, {"error": refusal})
    with pytest.raises(ClientRejectedError, match=rf"refused the client_credentials grant \({refusal}"):
        vault.get_access_token("b1")
    assert token_server.state.count("client_credentials") == 2
    others = "client_rejected" if spreads else "active"
    assert (status(db, "b1"), status(db, "b2"), status(db, "p1")) == ("client_rejected", others, others)
    assert sorted(_paused_events(db)) == (["b2", "p1"] if spreads else [])
    if spreads:
        for cid in ("b2", "p1"):
            with pytest.raises(ClientRejectedError, match="paused without a request: connection b1"):
                vault.force_refresh(cid)
        assert token_server.state.count("client_credentials") == 2 and token_server.state.count("refresh_token") == 0
