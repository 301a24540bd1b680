"""A token endpoint that throttles a sync's refresh is a throttle of the EHR, as a FHIR 429 is (BDX-10, SAL-25).

Before, a 429 (or 503 with Retry-After) from the token endpoint came out of the vault as ``temporarily_unavailable``
after three quick grants that ignored Retry-After, and a batch deferred nobody: each later member sent its refresh
into the same throttle and failed. Now the vault asks no sooner than Retry-After says (a wait longer than its
longest backoff is not waited for: one request), the sync's step fails with a ``RateLimitedError`` carrying the
endpoint's Retry-After (seconds or an HTTP-date), a batch defers the source's later members until then, and the
refresh token is kept: once the throttle ends, the next refresh works. Against the sandbox over real sockets.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from connectors.errors import RateLimitedError
from engine import runs
from engine.batch_defer import MAX_WAIT_S, source_throttle
from engine.retries import failure_streaks
from store.models import Connection
from tests.engine.helpers import add_fault, connect_patient, sandbox_patients
from tests.engine.job_runs import sync_type
from tests.engine.test_batch_runs import batch_after_first


def _token_posts(request_log) -> int:
    return len(request_log.paths("/oauth/token", method="POST"))


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_a_throttled_refresh_is_a_rate_limit_and_keeps_the_refresh_token(start_sandbox, world, http, request_log, form):
    sb = start_sandbox(patients=1)
    conn = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    later = datetime.now(UTC) + timedelta(seconds=600)
    retry_after = "600" if form == "seconds" else format_datetime(later, usegmt=True)
    add_fault(http, sb, "expired_token", path="/fhir/", times=1)  # the access token refused: a refresh is due
    add_fault(http, sb, "429", path="/oauth/token", retry_after=retry_after, times=None)
    request_log.clear()
    with pytest.raises(RateLimitedError) as raised:
        sync_type(world, conn, "Observation")
    assert raised.value.code == "token_endpoint_throttled" and raised.value.status == 429
    assert raised.value.retry_after is not None and 540 < raised.value.retry_after <= 601, raised.value.retry_after
    assert "refresh token is kept" in str(raised.value)
    assert _token_posts(request_log) == 1  # 10 min is longer than the vault waits: not asked again into it
    with world.env.db.session() as session:
        assert session.get(Connection, conn).status == "active"

    http.delete(f"{sb.base_url}/admin/faults").raise_for_status()
    add_fault(http, sb, "expired_token", path="/fhir/", times=1)
    again = sync_type(world, conn, "Observation")  # the refresh with the refresh token kept works
    assert again.error is None and again.fetched > 0
    assert _token_posts(request_log) == 2


def test_a_short_retry_after_is_waited_for_then_the_refresh_works(start_sandbox, world, http, request_log):
    sb = start_sandbox(patients=1)
    conn = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    add_fault(http, sb, "expired_token", path="/fhir/", times=1)
    add_fault(http, sb, "503", path="/oauth/token", retry_after="1", times=1)
    request_log.clear()
    report = sync_type(world, conn, "Observation")
    assert report.error is None and report.fetched > 0
    assert _token_posts(request_log) == 2


def test_a_throttled_token_endpoint_defers_the_batch_members_after_it(start_sandbox, world, http, request_log):
    """The first member's refresh meets the throttle: it fails with the endpoint's time as ``not_before``, the
    later members at the source are deferred until then and send nothing to the token endpoint."""
    sb = start_sandbox(patients=3)
    ids = sorted(connect_patient(world, sb, http=http, patient_id=p) for p in sandbox_patients(http, sb)[:3])
    add_fault(http, sb, "expired_token", path="/fhir/", times=None)
    add_fault(http, sb, "429", path="/oauth/token", retry_after="1200", times=None)
    result, stopped, before = batch_after_first(world, ids, request_log)
    db = world.env.db
    assert "TokenEndpointThrottledError" in (stopped.error or ""), stopped.error
    assert stopped.not_before is not None and stopped.not_before > before + timedelta(minutes=15)
    for cid in ids[1:]:
        row = runs.get(db, result.sync_run_ids[cid])
        assert row is not None and row.status == "deferred" and row.not_before == stopped.not_before, row
        assert "token_endpoint_throttled, HTTP 429" in (row.error or ""), row.error
    assert _token_posts(request_log) == 1
    assert set(failure_streaks(db)) == {ids[0]}


def test_an_absurd_retry_after_holds_the_source_for_a_day_at_most(start_sandbox, world, http, request_log):
    """BDX-10: a token endpoint naming a Retry-After of 10^14 s (or 30 years) made the batch member's
    ``not_before`` overflow (``OverflowError`` out of the batch's isolation boundary: the run crashed, its members
    left open) or park the source's connections for years. The hold is capped at ``MAX_WAIT_S`` (a day)."""
    sb = start_sandbox(patients=2)
    ids = sorted(connect_patient(world, sb, http=http, patient_id=p) for p in sandbox_patients(http, sb)[:2])
    add_fault(http, sb, "expired_token", path="/fhir/", times=None)
    add_fault(http, sb, "429", path="/oauth/token", retry_after="99999999999999", times=None)
    result, stopped, before = batch_after_first(world, ids, request_log)
    assert "TokenEndpointThrottledError" in (stopped.error or ""), stopped.error
    assert stopped.not_before is not None
    assert before + timedelta(hours=23) < stopped.not_before <= datetime.now(UTC) + timedelta(seconds=MAX_WAIT_S)
    row = runs.get(world.env.db, result.sync_run_ids[ids[1]])
    assert row is not None and row.status == "deferred" and row.not_before == stopped.not_before, row


def test_a_retry_after_of_years_is_read_as_a_day() -> None:
    """A 30-year Retry-After (no overflow) held the source's connections for 30 years: never synced again."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    held = source_throttle(RateLimitedError("throttled", 429, retry_after=1e9), "c1", now)
    assert held is not None and held.until == now + timedelta(seconds=MAX_WAIT_S)
    named = source_throttle(RateLimitedError("throttled", 429, retry_after=7200.0), "c1", now)
    assert named is not None and named.until == now + timedelta(hours=2)  # a time within a day is kept
