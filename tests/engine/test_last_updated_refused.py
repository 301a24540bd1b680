"""A server refusing ``_lastUpdated`` on a type it declared (or the vendor default named) for it, as Oracle Health
answers 400 on resources without it (vendors.md §3): the type is searched whole instead of failing every run."""

from __future__ import annotations

from typing import Any

import httpx

from tests.engine.helpers import connect_patient, make_environment, mutate
from tests.engine.job_runs import sync_type
from tests.engine.search_servers import mark_of


def test_a_type_whose_last_updated_search_is_refused_is_searched_whole_bdx28(
    tmp_path: Any, start_sandbox: Any, http: httpx.Client
) -> None:
    """BDX-28: the incremental search (``_lastUpdated=gt...``) answers 400 ``not-supported``; the run searches the
    type without it (a superset: idempotent upserts absorb the unchanged), stores the change, says so in the
    report's warnings, and moves the mark. Before, the type failed on every run and no change ever arrived."""
    sb = start_sandbox(patients=1)
    world = make_environment(tmp_path / "w", http=http, page_size=5)
    conn = connect_patient(world, sb, http=http)
    first = sync_type(world, conn, "Observation")
    assert first.error is None and first.created > 0
    before = mark_of(world, conn)
    changed = [r for r in mutate(http, sb, update=40)["updated"] if r.startswith("Observation/")]
    assert changed, "the mutation changed no Observation"
    sb.admin.settings(refused_search_params=["_lastUpdated"])
    again = sync_type(world, conn, "Observation")
    assert again.error is None and not again.incomplete, again.error
    assert again.updated == len(changed) and again.created == 0
    assert any(w.startswith("the server refused _lastUpdated") for w in again.warnings), again.warnings
    after = mark_of(world, conn)
    assert before is not None and after is not None and after > before
