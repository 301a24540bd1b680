"""One huge resource through the REST path (issue 10), over a real socket: a search page carrying a 20 MB
Observation lands and merges with its neighbours, and reruns stay green; one over ``EHRSYNC_MAX_RESOURCE_BYTES``
is quarantined with the reason while the rest of the page is stored. Before the change the DuckDB merge of that
type ran out of memory on every run."""

from __future__ import annotations

import hashlib
from typing import Any

import duckdb
import orjson
import pytest

from tests.engine.fake_fhir import FakeFhir, Reply, bundle, serve
from tests.engine.helpers import SyncWorld, connect_static
from tests.engine.job_runs import sync_type
from warehouse.limits import MAX_RESOURCE_ENV

MIB = 1024 * 1024


def _obs(rid: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "meta": {"lastUpdated": "2026-10-01T00:00:00Z", "versionId": "1"},
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/p1"},
        **extra,
    }


def _server(huge: dict[str, Any]) -> FakeFhir:
    fake = FakeFhir()

    def observation(_path: str, _q: dict[str, list[str]]) -> Reply:
        return bundle([_obs("o1"), huge, _obs("o2")], last_updated="2026-10-20T00:00:00Z")

    fake.routes["/fhir/Observation"] = observation
    return fake


def _stored(world: SyncWorld) -> dict[str, str]:
    con = duckdb.connect(world.env.warehouse_target, read_only=True)
    try:
        rows = con.execute("SELECT id, content_hash FROM fhir_resources WHERE resource_type = 'Observation'").fetchall()
    finally:
        con.close()
    return {r[0]: r[1] for r in rows}


def test_a_20mb_resource_on_a_search_page_is_stored(world: SyncWorld) -> None:
    huge = _obs("huge", note=[{"text": "x" * (20 * MIB)}])
    with serve(_server(huge)) as fake:
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        first = sync_type(world, conn, "Observation")
        again = sync_type(world, conn, "Observation", full=True)
    assert first.error is None, first.error
    assert (first.fetched, first.created) == (3, 3)
    assert again.error is None, again.error
    stored = _stored(world)
    assert set(stored) == {"o1", "o2", "huge"}
    assert stored["huge"] == hashlib.sha256(orjson.dumps(huge)).hexdigest()


def test_a_resource_over_the_limit_is_quarantined_and_its_page_kept(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_RESOURCE_ENV, str(2 * MIB))
    with serve(_server(_obs("huge", note=[{"text": "x" * (5 * MIB)}]))) as fake:
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        obs = sync_type(world, conn, "Observation")
    assert obs.error is None, obs.error
    assert (obs.fetched, obs.quarantined, obs.created) == (3, 1, 2)
    assert set(_stored(world)) == {"o1", "o2"}
    con = duckdb.connect(world.env.warehouse_target, read_only=True)
    try:
        [(error,)] = con.execute("SELECT error FROM fhir_quarantine").fetchall()
    finally:
        con.close()
    assert f"over the {2 * MIB}-byte limit ({MAX_RESOURCE_ENV})" in error
