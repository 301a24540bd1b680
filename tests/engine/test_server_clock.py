"""The high-water mark is the server's time (BDX-27), and a server clock that runs ahead and is then set right
(an NTP step back, a host moved) must not leave a mark in the future: every change stamped before that future
instant would be skipped by ``_lastUpdated=gt(mark - overlap)`` (BDX-28), run after run, with nothing failing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from engine import cursors, run_bulk_export
from tests.engine.helpers import _admin, connect_backend, connect_patient, mutate
from tests.engine.job_runs import run_sync


def test_changes_after_a_server_clock_set_back_are_still_synced_bdx27(start_sandbox: Any, world: Any, http: Any):
    sb = start_sandbox(patients=1, clock_shift_s=6 * 3600)  # the server's clock is six hours ahead
    conn = connect_patient(world, sb, http=http)
    first = run_sync(world, conn)
    assert first.status == "completed", first.error
    mark = cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "Observation")
    assert mark is not None

    _admin(http, sb, "settings", {"clock_shift_s": 0})  # the server's clock is set right
    changed = mutate(http, sb, update=4)["updated"]
    assert changed
    again = run_sync(world, conn)
    assert again.status == "completed", again.error
    assert sum(r.updated for r in again.types.values()) == len(changed)
    warned = first.result.materializations["landing/Observation"]["warnings"]
    assert any("ahead of this host's clock" in w for w in warned)


def test_bulk_since_after_a_server_clock_set_back_still_exports_the_changes_bdx14_bdx27(
    start_sandbox: Any, world: Any, http: Any
) -> None:
    """The same for Bulk: the next ``_since`` is the export's transactionTime (BDX-14), but no later than this
    host's time when the kick-off was accepted, less a minute; before, it stayed six hours ahead and the changes
    made once the server's clock was set right were never exported."""
    # 150 s ahead: within what a client assertion's 240 s lifetime lets a backend client sign in to (a clock six
    # hours ahead refuses the assertion as expired); on the old code the changes below, made well within 150 s of
    # the kick-off, were stamped before the stored ``_since``
    sb = start_sandbox(patients=2, clock_shift_s=150)
    conn = connect_backend(world, sb, http=http, group_id="grp0")  # grp0: every sandbox patient
    first = run_bulk_export(world.env, conn, "first")
    assert first.status == "completed", first.error
    assert first.transaction_time is not None and first.transaction_time > datetime.now(UTC) + timedelta(seconds=60)
    assert first.mark_stored is not None and first.mark_stored < datetime.now(UTC)
    warned = [w for r in first.types.values() for w in r.warnings]
    assert warned and all("after this host saw the kick-off accepted" in w for w in warned)

    _admin(http, sb, "settings", {"clock_shift_s": 0})  # the server's clock is set right
    changed = sb.admin.mutate(update=4, seed=5, patients=["pat0", "pat1"])["updated"]
    assert len(changed) == 4
    again = run_bulk_export(world.env, conn, "second")
    assert again.status == "completed", again.error
    assert sum(r.updated for r in again.types.values()) == len(changed)
    assert not [w for r in again.types.values() for w in r.warnings], "a server on time is not warned about"


def test_bdx27_a_server_clock_minutes_ahead_is_named_and_seconds_of_drift_are_not() -> None:
    """The mark is this host's time whenever the server's is later; a warning names the lead past a minute (five
    minutes ahead is a clock to fix), never for the few seconds two clocks ordinarily drift apart."""
    from engine.landing_sink import bounded_mark

    now = datetime.now(UTC)
    warned: list[str] = []
    mark = bounded_mark(now + timedelta(minutes=5), warned)
    assert mark is not None and now <= mark <= datetime.now(UTC)
    (warning,) = warned
    said = re.search(r"clock is (\d+)s ahead", warning)  # said in seconds
    assert said is not None and 240 <= int(said[1]) <= 300, warning  # a loaded machine may stall between the two
    drift: list[str] = []
    assert bounded_mark(datetime.now(UTC) + timedelta(seconds=10), drift) is not None and drift == []
    behind = now - timedelta(hours=1)
    assert bounded_mark(behind, drift) == behind and drift == []
