"""The SMART callback crashing between storing the patient's connection and naming it on the login state.

Storing the connection and its tokens and recording the connection's id on the consumed state are one transaction
(``grants.keep_connection``, ``CallbackLink``): a process killed or a database failing between the two keeps neither,
so a reload of the callback tells the truth ("did not finish, start again" with nothing stored, not a connection the
reload cannot see) and starting again makes one connection, not a second. A crash after that transaction leaves the
connection named on the state: the reload says the records were connected. The code goes to the EHR once.

The service runs for real (uvicorn) against the sandbox EHR over sockets, on SQLite and PostgreSQL. The kill is
``ProcessKilled`` raised where the id is recorded: a ``BaseException`` like the interrupt of a killed process, so no
``except Exception`` of the service runs and no later write happens, and the open transaction is rolled back as a
dead connection's would be. The database failure is a real one: a trigger in the app database refuses the write.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text, update

from auth_service.services.callback_replay import exchange_deadline_s
from store.models import OAuthState, utcnow
from store.states import CallbackOutcome, hash_secret
from tests.auth_service.ehr import Service, patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.test_callback_interrupted import _start, _stored
from tests.auth_service.test_callback_reload import HTML, callback_url, token_requests


class ProcessKilled(BaseException):
    """The auth service's process dying at that line (SIGKILL, OOM): nothing after it runs."""


def _kill_when(svc: Service, monkeypatch: pytest.MonkeyPatch, status: str) -> None:
    """The process dies as the callback records the outcome ``status`` naming its connection."""
    real = svc.ctx.states.record_outcome

    def record(state: str, outcome: CallbackOutcome, **kwargs: Any) -> None:
        if outcome.status == status and outcome.connection_id is not None:
            raise ProcessKilled
        real(state, outcome, **kwargs)

    monkeypatch.setattr(svc.ctx.states, "record_outcome", record)


def _crashing_sign_in(svc: Service, monkeypatch: pytest.MonkeyPatch) -> tuple[str, httpx.Cookies]:
    """Sign in; the callback's process dies (the browser gets a reset connection, or an error), and the service
    is started again on the same database. The callback URL and the browser's cookies, for its reloads."""
    with httpx.Client(timeout=30, headers=HTML) as browser:
        url = callback_url(svc, browser)
        try:
            r = browser.get(url)
            assert r.status_code >= 500 and "location" not in r.headers, r.text[:300]
        except httpx.TransportError:
            pass
        monkeypatch.undo()
        return url, browser.cookies


def _after_the_wait(svc: Service, url: str) -> None:
    """Move the state's consumption back past the exchange deadline, as a patient reloading later would find it."""
    state = parse_qs(urlsplit(url).query)["state"][0]
    then = utcnow() - timedelta(seconds=exchange_deadline_s(svc.ctx) + 5)
    with svc.ctx.db.session() as session, session.begin():
        session.execute(update(OAuthState).where(OAuthState.state_hash == hash_secret(state)).values(used_at=then))


def _start_again(svc: Service, sandbox: Any, client_id: str) -> None:
    """The patient signs in again from the start (approving at the EHR again): connected."""
    sandbox_admin(sandbox, "preapprove", {"client_id": client_id, "patient_id": patient_ids(sandbox)[0]})
    with httpx.Client(timeout=30, headers=HTML) as browser:
        r = browser.get(callback_url(svc, browser))
        assert r.status_code == 303 and r.headers["location"] == "/connect/done", r.text[:500]


def _killed_before_the_state_names_the_connection(svc: Service, sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _start(sandbox, svc, "killed-app")
    _kill_when(svc, monkeypatch, "pending")
    url, cookies = _crashing_sign_in(svc, monkeypatch)
    with httpx.Client(timeout=30, headers=HTML, cookies=cookies) as browser:  # a new connection, as after a restart
        assert _stored(svc) == []  # not a connection (and tokens) the state does not name
        waiting = browser.get(url)  # within the exchange's deadline: the first request may still be running
        assert waiting.status_code == 202 and "Still connecting your record" in waiting.text
        _after_the_wait(svc, url)
        page = browser.get(url)
        api = browser.get(url, headers={"Accept": "application/json"})
    assert page.status_code == 503 and "did not finish" in page.text and "start again" in page.text, page.text[:800]
    assert api.status_code == 503 and api.json()["error"] == "ehr_unavailable"
    assert "connectionId" not in api.json()
    assert token_requests(sandbox) == 1  # no reload sent the code again
    assert _stored(svc) == []
    _start_again(svc, sandbox, "killed-app")
    [(_, has_tokens)] = _stored(svc)  # one connection: the crashed sign-in left none behind to duplicate
    assert has_tokens and token_requests(sandbox) == 2


def test_callback_killed_before_naming_its_connection_keeps_neither_and_the_reload_says_start_again(
    make_settings, sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_service(make_settings, sandbox, smart_practice(sandbox, "killed-app")) as svc:
        _killed_before_the_state_names_the_connection(svc, sandbox, monkeypatch)


@pytest.mark.postgres
def test_callback_killed_before_naming_its_connection_on_postgres(
    make_settings, sandbox, postgres_url, monkeypatch: pytest.MonkeyPatch
) -> None:
    practice = smart_practice(sandbox, "killed-app")
    with running_service(make_settings, sandbox, practice, DATABASE_URL=postgres_url) as svc:
        _killed_before_the_state_names_the_connection(svc, sandbox, monkeypatch)


def test_callback_killed_after_naming_its_connection_is_reloaded_as_connected(
    make_settings, sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side of the transaction: the connection, its tokens and the state naming it are committed, and
    the process dies before the callback answers. The reload names that connection (never "start again")."""
    with running_service(make_settings, sandbox, smart_practice(sandbox, "killed-late-app")) as svc:
        _start(sandbox, svc, "killed-late-app")
        _kill_when(svc, monkeypatch, "connected")
        url, cookies = _crashing_sign_in(svc, monkeypatch)
        with httpx.Client(timeout=30, headers=HTML, cookies=cookies) as browser:
            [(connection_id, has_tokens)] = _stored(svc)
            assert has_tokens
            _after_the_wait(svc, url)
            page = browser.get(url)
            api = browser.get(url, headers={"Accept": "application/json"})
        assert page.status_code == 500 and "Your records were connected" in page.text, page.text[:800]
        assert "Try again" not in page.text and "start again" not in page.text
        assert api.json()["error"] == "interrupted_after_connecting" and api.json()["connectionId"] == connection_id
        assert token_requests(sandbox) == 1
        assert svc.ctx.vault.get_access_token(connection_id)
        assert len(_stored(svc)) == 1


def test_callback_whose_database_refuses_to_name_its_connection_keeps_neither(make_settings, sandbox) -> None:
    """The app database fails the write that names the connection on the state: the connection and its tokens
    are rolled back with it, and the first answer and the reload both say nothing was shared."""
    with running_service(make_settings, sandbox, smart_practice(sandbox, "db-fault-app")) as svc:
        _start(sandbox, svc, "db-fault-app")
        with svc.ctx.db.engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_connection_id BEFORE UPDATE OF extra ON oauth_states"
                    " WHEN NEW.extra LIKE '%connection_id%' BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
                )
            )
        with httpx.Client(timeout=30, headers=HTML) as browser:
            url = callback_url(svc, browser)
            first = browser.get(url)
            reload = browser.get(url, headers={"Accept": "application/json"})
        assert first.status_code == 500 and "Nothing was shared" in first.text, first.text[:800]
        assert reload.status_code == 500 and reload.json()["error"] == "sign_in_interrupted"
        assert token_requests(sandbox) == 1 and _stored(svc) == []
        with svc.ctx.db.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_connection_id"))
        _start_again(svc, sandbox, "db-fault-app")
        assert len(_stored(svc)) == 1
