"""The EHR's own quota headers, over a real socket: the sandbox's ``quota`` fault allows N requests per window,
says on every answer (2xx included) how many remain and when the window resets, and answers 429 once they are spent.
ehrsync reads them after each answer: a short reset is waited for (no 429 ever provoked), a long one (a daily quota)
fails the step at once with ``quota_exhausted`` and nothing more is sent; unusable headers change nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from connectors.transport.quota import QUOTAS
from engine import cursors
from store.errors import RefreshDeferredError
from store.models import Connection
from tests.engine.helpers import add_fault, connect_patient
from tests.engine.job_runs import run_sync

TYPES = ["Patient", "Condition", "Observation"]


def _quota_report(http: httpx.Client, sb: Any) -> dict[str, Any]:
    faults = http.get(f"{sb.base_url}/admin/faults").json()
    return next(f for f in faults if f["kind"] == "quota")


def _client_id(world: Any, conn: str) -> str:
    with world.env.db.session() as session:
        return str(session.get(Connection, conn).client_id)


def _fhir_requests(request_log: Any) -> int:
    return sum(1 for url in request_log.urls if url.path.startswith("/fhir"))


@pytest.mark.parametrize("style", ["ietf", "x_epoch"])
def test_short_reset_is_waited_for_and_no_429_is_provoked(world, shared_sb, http, request_log, style):
    conn = connect_patient(world, shared_sb, http=http)
    add_fault(http, shared_sb, "quota", path="/fhir", quota=3, window_s=2, quota_headers=style)
    request_log.clear()
    report = run_sync(world, conn, types=TYPES)
    assert report.status == "completed" and report.failed_types == {}, (report.error, report.failed_types)
    counted = _quota_report(http, shared_sb)
    assert _fhir_requests(request_log) > 3, "the sync must need more requests than one window allows"
    assert counted["refused"] == 0, f"ehrsync provoked {counted['refused']} 429(s) the headers warned of"


def test_long_reset_fails_fast_sends_nothing_more_and_keeps_the_marks(world, shared_sb, http, request_log):
    conn = connect_patient(world, shared_sb, http=http)
    first = run_sync(world, conn, types=TYPES)
    assert first.status == "completed", first.error
    marks = {t: cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, t) for t in TYPES}
    add_fault(http, shared_sb, "quota", path="/fhir", quota=1, window_s=86400, quota_headers="draft")
    report = run_sync(world, conn, types=TYPES)
    assert report.status == "failed"
    counted = _quota_report(http, shared_sb)
    assert counted["requests"] == 1 and counted["refused"] == 0, counted  # the one allowed call, then nothing
    errors = " ".join(report.failed_types.values()) or (report.error or "")
    assert "quota_exhausted" in errors or "quota" in errors, errors
    assert "RateLimit-Remaining header said 0 of 1 calls remain until" in errors, errors
    assert {t: cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, t) for t in TYPES} == marks


def test_malformed_quota_headers_are_ignored(world, shared_sb, http):
    conn = connect_patient(world, shared_sb, http=http)
    add_fault(http, shared_sb, "quota", path="/fhir", quota=100_000, window_s=86400, quota_headers="malformed")
    report = run_sync(world, conn, types=TYPES)
    assert report.status == "completed" and report.failed_types == {}, (report.error, report.failed_types)
    assert _quota_report(http, shared_sb)["requests"] > 0
    held = [
        QUOTAS.held((scope, lane, where, app))
        for scope in ("", shared_sb.fhir_base)
        for lane, where in (("api", shared_sb.base_url), ("oauth", f"{shared_sb.base_url}/oauth/token"))
        for app in ("", _client_id(world, conn))
    ]
    assert held == [None] * 8


def test_spent_token_endpoint_quota_does_not_hold_fhir_requests(world, shared_sb, http):
    """The token endpoint's quota (athenahealth: OAuth requests per minute) is kept apart from the FHIR API's."""
    add_fault(http, shared_sb, "quota", path="/oauth/token", quota=1, window_s=86400, quota_headers="x")
    conn = connect_patient(world, shared_sb, http=http)  # the code exchange spends the token endpoint's one call
    assert QUOTAS.held(("", "oauth", f"{shared_sb.base_url}/oauth/token", _client_id(world, conn))) is not None
    report = run_sync(world, conn, types=TYPES)
    assert report.status == "completed" and report.failed_types == {}, (report.error, report.failed_types)


def test_a_refresh_held_by_a_spent_token_quota_keeps_the_valid_token_and_sends_nothing(world, shared_sb, http):
    """A token endpoint whose quota is spent until a far reset: the vault's refresh is not sent (quota_exhausted,
    nothing sent, transient like a busy call budget), the still-valid access token is kept and the connection stays
    active; an admin's refresh (``keep_valid=False``) is told it was not done."""
    add_fault(http, shared_sb, "quota", path="/oauth/token", quota=1, window_s=86400, quota_headers="ietf")
    conn = connect_patient(world, shared_sb, http=http)  # the code exchange spends the token endpoint's one call
    current = world.env.vault.get_access_token(conn)
    assert world.env.vault.force_refresh(conn) == current
    with pytest.raises(RefreshDeferredError, match="the refresh was not done"):
        world.env.vault.force_refresh(conn, keep_valid=False)
    counted = _quota_report(http, shared_sb)
    assert counted["requests"] == 1 and counted["refused"] == 0, counted  # the exchange only: no refresh sent
    with world.env.db.session() as session:
        assert session.get(Connection, conn).status == "active"


def test_one_apps_spent_quota_does_not_hold_another_apps_sync(world, shared_sb, http):
    """Two connections of two apps (client ids) at one FHIR base: app A's sync spends the day's one call and then
    fails ``quota_exhausted``, nothing more sent. App B's sync is not held by A's hold (quotas are granted per app):
    its first request goes out; the sandbox, counting every app together, answers it 429 with the day's reset, which
    fails B's request at once (no retry: the reset is longer than ehrsync waits) and holds B's later ones."""
    conn_a = connect_patient(world, shared_sb, http=http)
    conn_b = connect_patient(world, shared_sb, http=http)
    add_fault(http, shared_sb, "quota", path="/fhir", quota=1, window_s=86400, quota_headers="x")
    assert run_sync(world, conn_a, types=TYPES).status == "failed"
    assert _quota_report(http, shared_sb)["requests"] == 1
    report = run_sync(world, conn_b, types=TYPES)
    assert report.status == "failed"
    counted = _quota_report(http, shared_sb)
    assert (counted["requests"], counted["refused"]) == (2, 1), counted
    errors = " ".join(report.failed_types.values()) or (report.error or "")
    assert "rate_limited" in errors or "429" in errors, errors
