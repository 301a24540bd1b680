"""Login states do not pile up: as a login starts, the auth service deletes the states no request can use any
more (at most once per ``PURGE_EVERY`` per process), and a reload of a callback within its replay window is still
answered from the state after such a purge. Over the real service (uvicorn) and the sandbox EHR."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from store.models import OAuthState, utcnow
from store.states import CallbackOutcome, OAuthStateStore, hash_secret
from tests.auth_service.ehr import Service, running_service, smart_practice
from tests.auth_service.test_callback_interrupted import _start
from tests.auth_service.test_callback_reload import HTML, LOGIN, callback_url, token_requests


def _store_at(svc: Service, ago: timedelta) -> OAuthStateStore:
    """The service's state store with its clock ``ago`` in the past: states as logins started then left them."""
    clock: Callable[[], datetime] = lambda: utcnow() - ago  # noqa: E731
    return OAuthStateStore(svc.ctx.db, svc.ctx.cipher, clock=clock)


def _state(svc: Service, ago: timedelta, consumed_ago: timedelta | None = None) -> str:
    """A state created ``ago``; consumed ``consumed_ago`` by its browser's callback, which connected."""
    sid = "b" * 43
    state = _store_at(svc, ago).create(
        browser_session=sid, tenant_id="t1", provider_id="smart", issuer="https://ehr", code_verifier="v" * 64
    )
    if consumed_ago is not None:
        consumer = _store_at(svc, consumed_ago)
        consumer.consume(state, browser_session=sid)
        consumer.record_outcome(state, CallbackOutcome("connected", connection_id="conn-1"))
    return state


def _left(svc: Service, *states: str) -> list[bool]:
    with svc.ctx.db.session() as session:
        there = set(session.scalars(select(OAuthState.state_hash)))
    return [hash_secret(s) in there for s in states]


def test_a_login_starting_deletes_the_expired_and_finished_states_and_keeps_the_rest(
    make_settings: Any, sandbox: Any
) -> None:
    with running_service(make_settings, sandbox, smart_practice(sandbox, "purge-app")) as svc:
        minutes = [timedelta(minutes=m) for m in range(26)]
        abandoned = _state(svc, minutes[11])  # expired a minute ago, never used
        finished = _state(svc, minutes[25], consumed_ago=minutes[23])  # its replay window ended 13 minutes ago
        answered = _state(svc, minutes[12], consumed_ago=minutes[5])  # expired, but within its replay window
        started = _state(svc, minutes[1])  # a patient at the EHR's sign-in page now
        with httpx.Client(timeout=30) as browser:
            r = browser.get(svc.base_url + LOGIN)
        assert r.status_code == 302, r.text
        assert _left(svc, abandoned, finished, answered, started) == [False, False, True, True]
        with svc.ctx.db.session() as session:  # and the new login's own state
            assert len(list(session.scalars(select(OAuthState.id)))) == 3


def _reload_after_a_purge(svc: Service, sandbox: Any) -> None:
    _start(sandbox, svc, "purge-reload-app")
    with httpx.Client(timeout=30, headers=HTML) as browser:
        url = callback_url(svc, browser)
        first = browser.get(url)
        assert first.status_code == 303 and first.headers["location"] == "/connect/done", first.text[:500]
        svc.ctx.states.purge_expired()  # as the next patient's login would, moments later
        again = browser.get(url)
    assert again.status_code == 303 and again.headers["location"] == "/connect/done", again.text[:500]
    assert token_requests(sandbox) == 1  # answered from the state: the code went to the EHR once


def test_a_callback_reloaded_after_a_purge_is_still_answered_as_connected(make_settings: Any, sandbox: Any) -> None:
    with running_service(make_settings, sandbox, smart_practice(sandbox, "purge-reload-app")) as svc:
        _reload_after_a_purge(svc, sandbox)


@pytest.mark.postgres
def test_a_callback_reloaded_after_a_purge_on_postgres(make_settings: Any, sandbox: Any, postgres_url: str) -> None:
    practice = smart_practice(sandbox, "purge-reload-app")
    with running_service(make_settings, sandbox, practice, DATABASE_URL=postgres_url) as svc:
        _reload_after_a_purge(svc, sandbox)
