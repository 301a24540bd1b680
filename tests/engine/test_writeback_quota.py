"""Draft notes and the EHR's quota headers (draft-note §5: 429/503 → ``pending``, honour ``Retry-After``, at most
8 tries). A request ehrsync withholds because the EHR said its quota is spent (``quota_exhausted``) reaches no EHR:
it is not one of the note's tries, and the note waits for the quota's reset, not the 10-minute backoff cap. Before,
a daily quota failed every pending note (``retries_exhausted``) after its tries, none of which was sent."""

from __future__ import annotations

from datetime import timedelta

import httpx

from engine.writeback import write_note
from engine.writeback.config import WritebackConfig
from store.models import utcnow
from tests.engine.helpers import add_fault
from tests.engine.writeback_helpers import FAST, enqueue, writable_connection


def _quota_requests(http: httpx.Client, sb) -> int:
    faults = http.get(f"{sb.base_url}/admin/faults").json()
    return int(next(f for f in faults if f["kind"] == "quota")["requests"])


def test_a_note_whose_post_is_held_by_a_spent_daily_quota_stays_pending_its_try_uncounted(world, sb, http) -> None:
    """Each attempt reads the CapabilityStatement, then POSTs: a quota of 3 calls a day lets the first note through
    (2 calls) and the second's CapabilityStatement read (the last call), so its POST is withheld, in ``sending``."""
    conn = writable_connection(world, sb, http)
    first, second = enqueue(world, conn), enqueue(world, conn)
    add_fault(http, sb, "quota", path="/fhir", quota=3, window_s=86_400, quota_headers="x")
    assert write_note(world.env, FAST, first.id).state == "written"
    assert _quota_requests(http, sb) == 2, "the first note's CapabilityStatement read and POST"
    before = utcnow()
    runs = [write_note(world.env, FAST, second.id) for _ in range(FAST.max_attempts + 2)]
    assert [n.state for n in runs] == ["pending"] * len(runs), [(n.state, n.reason_code) for n in runs]
    last = runs[-1]
    assert (last.attempts, last.reason_code) == (0, "quota_exhausted")  # the withheld POST was no try
    assert _quota_requests(http, sb) == 3  # the second note's POST never reached the EHR
    assert last.next_attempt_at is not None and last.next_attempt_at > before + timedelta(hours=20)


def test_a_retry_after_longer_than_the_backoff_cap_is_honoured_up_to_a_day() -> None:
    config = WritebackConfig(backoff_cap_s=600.0)
    assert config.backoff_s(1, retry_after=3_600.0) == 3_600.0  # draft-note §5: honour Retry-After
    assert config.backoff_s(1, retry_after=10 * 86_400.0) == config.retry_after_cap_s == 86_400.0
    assert config.backoff_s(9) == 600.0  # no Retry-After: doubling, capped at 10 min


def test_a_post_throttled_for_longer_than_ehrsync_waits_is_one_try_pending_until_the_retry_after(
    world, sb, http, request_log
) -> None:
    """A 429 on the note's POST asking for 20 minutes (past the 15 minutes ehrsync waits for a throttle): the answer
    is the error at once, no wait and no POST again (before: four waits of 15 minutes, five POSTs). The POST was sent,
    so it is one of the note's tries (a withheld one would not be); the note waits the server's 20 minutes."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("429", path="/fhir/DocumentReference", method="POST", times=None, retry_after="1200")
    before = utcnow()
    waiting = write_note(world.env, FAST, note.id)
    assert (waiting.state, waiting.reason_code, waiting.attempts) == ("pending", "rate_limited", 1)
    assert len(request_log.paths("/fhir/DocumentReference", "POST")) == 1
    assert waiting.next_attempt_at is not None
    assert before + timedelta(seconds=1190) < waiting.next_attempt_at < utcnow() + timedelta(seconds=1210)
