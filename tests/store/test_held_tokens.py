"""``connection_holding`` (SAL-34): whether a token the EHR just issued is one a stored connection holds, so a
refused sign-in's revocation never ends it. Same client id at the same token endpoint only; a row sealed under a key
only another process has counts as holding (it may), an altered one does not (no process can use it)."""

from __future__ import annotations

import base64
import os

from sqlalchemy import update

from connectors.smart import TokenResponse
from store import AppDatabase, TokenCipher, TokenVault
from store.held_tokens import connection_holding
from store.models import TokenRecord
from tests.store.conftest import add_connection

BASE = "https://ehr.example/fhir"
ENDPOINT = "https://ehr.example/token"


def _stored(db: AppDatabase, cipher: TokenCipher, connection_id: str, client_id: str = "app-1") -> None:
    add_connection(db, fhir_base=BASE, token_endpoint=ENDPOINT, connection_id=connection_id, client_id=client_id)
    token = TokenResponse(f"AT-{connection_id}", "Bearer", 300, None, refresh_token=f"RT-{connection_id}")
    TokenVault(db, cipher).save_token_response(connection_id, token)


def _holder(db: AppDatabase, cipher: TokenCipher, *tokens: str, client_id: str = "app-1") -> str | None:
    return connection_holding(db, cipher, tokens, client_id=client_id, token_endpoint=ENDPOINT, fhir_base=BASE)


def test_sal34_a_reissued_refresh_or_access_token_names_the_connection_holding_it(
    db: AppDatabase, cipher: TokenCipher
) -> None:
    _stored(db, cipher, "c1")
    _stored(db, cipher, "c2", client_id="other-app")
    assert _holder(db, cipher, "RT-c1", "AT-new") == "c1"
    assert _holder(db, cipher, "RT-new", "AT-c1") == "c1"
    assert _holder(db, cipher, "RT-new", "AT-new") is None
    assert _holder(db, cipher, "RT-c2") is None  # another client's grant: never this one's
    assert _holder(db, cipher, "RT-c2", client_id="other-app") == "c2"
    assert _holder(db, cipher) is None


def test_sal34_an_unknown_key_may_hold_the_token_an_altered_row_does_not(db: AppDatabase, cipher: TokenCipher) -> None:
    _stored(db, cipher, "c1")
    other = TokenCipher.from_env({"INTEGRATIONS_TOKEN_ENC_KEY": base64.b64encode(os.urandom(32)).decode()})
    assert _holder(db, other, "RT-new") == "c1"  # sealed under a key this process lacks: it may hold it
    with db.session() as s, s.begin():
        s.execute(update(TokenRecord).values(refresh_token_ct=None, access_token_ct="garbage"))
    assert _holder(db, cipher, "RT-new") is None


def test_sal34_the_check_opens_a_bounded_number_of_rows_and_beyond_it_rules_nothing_out(
    db: AppDatabase, cipher: TokenCipher, monkeypatch
) -> None:
    """Each refused sign-in decrypted every stored token of the client (10,000 connections: 20,000 decryptions in
    the request). At most ``max_rows`` rows are opened; a client with more, none of them holding the token, is
    undecided (HeldTokensUndecidedError: the caller revokes nothing, as when the check fails), never "not held"."""
    import pytest

    from store import held_tokens

    for n in range(5):
        _stored(db, cipher, f"c{n}")
    opened: list[str] = []
    real_open = held_tokens.open_field
    monkeypatch.setattr(
        held_tokens, "open_field", lambda c, row, f: opened.append(row.connection_id) or real_open(c, row, f)
    )
    kw = {"client_id": "app-1", "token_endpoint": ENDPOINT, "fhir_base": BASE}
    assert connection_holding(db, cipher, ["RT-c1"], max_rows=3, **kw) == "c1"
    opened.clear()
    with pytest.raises(held_tokens.HeldTokensUndecidedError, match="more than 3"):
        connection_holding(db, cipher, ["RT-new"], max_rows=3, **kw)
    assert len(set(opened)) == 3
    assert connection_holding(db, cipher, ["RT-new"], max_rows=5, **kw) is None  # all looked at: none holds it
