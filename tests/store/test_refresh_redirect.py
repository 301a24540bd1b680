"""A token endpoint answering a refresh with a 3xx is an unusable answer (SAL-36): an audited ``invalid_response``,
whatever its Location. One httpx cannot parse (``https://h:abc/x``) used to fail in the transport's redirect check
as a ``FhirError``, neither transient nor an OAuth error: it escaped the vault with no ``token.refresh`` row."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from connectors.errors import OAuthError
from store import AppDatabase, TokenCipher
from store.models import AuditEvent
from tests.store.test_store_vault import seeded, status
from tests.store.tokenserver import RunningTokenServer

#: a Location httpx can parse, then ones it cannot (a port no number, a malformed host, a port out of range)
LOCATIONS = ["https://elsewhere.example/token", "https://h:abc/x", "http://[zz]/x", "https://h:99999/x"]


@pytest.mark.parametrize("location", LOCATIONS)
def test_sal36_a_refresh_answered_302_is_an_audited_invalid_response_whatever_its_location(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer, location: str
) -> None:
    vault = seeded(db, cipher, token_server, left=3600)
    token_server.state.answer_next = [(302, {})] * 3
    token_server.state.answer_headers = {"Location": location}
    with pytest.raises(OAuthError) as info:
        vault.force_refresh("c1", keep_valid=False)
    assert (info.value.error, info.value.status) == ("invalid_response", 302)
    assert str(info.value) == "invalid_response: refresh grant: HTTP 302 without an OAuth error body"
    with db.session() as s:
        stmt = select(AuditEvent).where(AuditEvent.action == "token.refresh").order_by(AuditEvent.id)
        events = [(e.outcome, e.detail) for e in s.scalars(stmt)]
    assert events == [("failure", {"grant": "refresh_token", "error_code": "invalid_response", "status_code": 302})]
    assert status(db) == "active" and token_server.state.count("refresh_token") == 1  # a considered answer: once
