"""The high-water mark is the server's time (BDX-27), and a server clock that runs ahead and is then set right
(an NTP step back, a host moved) must not leave a mark in the future: every change stamped before that future
instant would be skipped by ``_lastUpdated=gt(mark - overlap)`` (BDX-28), run after run, with nothing failing."""

from __future__ import annotations

from typing import Any

from engine import cursors
from tests.engine.helpers import _admin, connect_patient, mutate
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
