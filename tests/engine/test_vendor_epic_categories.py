"""Epic's Observation category fan-out follows the granted scopes, and one category Epic refuses (403: its API
is not on the app, vendors.md §2) costs that category only, never the others' data (SAL-21)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson
import pytest

from connectors.smart import parse_scopes
from engine import cursors
from engine.connection_info import ConnectionInfo
from engine.incremental import search_plans
from store.models import Connection
from tests.engine.fake_fhir import FakeFhir, Reply, bundle, outcome, serve
from tests.engine.helpers import SyncWorld, connect_static
from tests.engine.job_runs import run_sync

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LAB_ONLY = f"patient/Patient.rs patient/Observation.rs?category={CATEGORY}|laboratory launch/patient openid"
EVERYTHING = "patient/Patient.read patient/Observation.read launch/patient openid"
OLD_MARK = datetime(2026, 10, 1, tzinfo=UTC)
#: A CapabilityStatement declaring _lastUpdated on Observation: without it Epic's searches never use the mark.
_LAST_UPDATED = orjson.dumps(
    {
        "resourceType": "CapabilityStatement",
        "rest": [{"mode": "server", "resource": [{"type": "Observation", "searchParam": [{"name": "_lastUpdated"}]}]}],
    }
)


def _conn(granted: str | None) -> ConnectionInfo:
    return ConnectionInfo(
        id="c1",
        tenant_id="t1",
        provider_id="epic",
        kind="patient",
        fhir_base="https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4",
        status="active",
        patient_id="p1",
        group_id=None,
        granted_scopes=granted,
    )


def test_sal21_epic_observation_fan_out_follows_the_granular_grant() -> None:
    """SAL-21: a grant of lab Observations only searches the laboratory category, not the ones never granted."""
    plans = search_plans(_conn(LAB_ONLY), "Observation", None, 200)
    assert [p["category"] for p in plans] == ["laboratory"]
    every = search_plans(_conn(EVERYTHING), "Observation", None, 200)
    assert [p["category"] for p in every] == ["laboratory", "vital-signs", "social-history"]
    assert len(search_plans(_conn(None), "Observation", None, 200)) == 3  # scopes unknown: nothing filtered


@pytest.mark.parametrize(
    ("granted", "expected"),
    [
        ("patient/Observation.rs?category=vital-signs", ("vital-signs",)),
        (f"patient/Observation.rs?category={CATEGORY}|social-history patient/Observation.rs", ("a", "b", "c")),
        ("patient/Observation.rs?category=http://other.example/cs|laboratory", ()),
        (f"patient/Observation.rs?category={CATEGORY}|laboratory&code=http://loinc.org|1-8", ()),
        ("patient/Condition.rs", ()),
    ],
)
def test_sal18_21_granular_category_scopes(granted: str, expected: tuple[str, ...]) -> None:
    """SAL-18/21: ``system|code`` or bare codes of the HL7 category system; an unfiltered scope covers all;
    a scope also filtering on something else (code) covers no whole category."""
    from connectors.providers.epic import granted_categories

    categories = ("a", "b", "c") if expected == ("a", "b", "c") else ("laboratory", "vital-signs", "social-history")
    assert granted_categories(parse_scopes(granted), "Observation", categories) == expected


def _obs(oid: str, category: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "meta": {"lastUpdated": "2026-10-15T00:00:00Z"},
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"text": category},
        "subject": {"reference": "Patient/p1"},
    }


def _epic_server(refused: set[str]) -> FakeFhir:
    """Epic-like: Observation needs a category; the categories in ``refused`` answer 403 with an empty body."""
    fake = FakeFhir()

    def observations(_path: str, query: dict[str, list[str]]) -> Reply:
        category = query.get("category", [""])[0]
        if not category:
            return outcome(400, "required")
        if category in refused:
            return 403, {}, b""
        return bundle([_obs(f"{category}-1", category)], last_updated="2026-10-20T00:00:00Z")

    fake.routes["/fhir/Observation"] = observations
    return fake


def _epic_connection(world: SyncWorld, fhir_base: str, scope: str) -> str:
    conn = connect_static(world, fhir_base, patient_id="p1", scope=scope)
    with world.env.db.locked_session() as session:
        row = session.get(Connection, conn)
        assert row is not None
        row.provider_id = "epic"
        cursors.advance(session, conn, cursors.REST_STREAM, "Observation", "earlier-run", OLD_MARK)
        session.commit()
    return conn


def _stored_ids(world: SyncWorld, conn: str) -> list[str]:
    with duckdb.connect(world.env.warehouse_target, read_only=True) as db:
        rows = db.execute(
            "SELECT id FROM fhir_resources WHERE connection_id = ? AND resource_type = 'Observation' ORDER BY id",
            [conn],
        ).fetchall()
    return [r[0] for r in rows]


def test_sal21_one_refused_epic_category_keeps_the_others_data_and_holds_the_mark(world: SyncWorld) -> None:
    """SAL-21: vital-signs answers 403 although the grant covers it. The laboratory and social-history pages
    already received are stored; the type fails naming the refused category, and its mark stays where it was
    (the vital-signs changes since then were not received, so a later mark would skip them)."""
    with serve(_epic_server({"vital-signs"})) as fake:
        conn = _epic_connection(world, fake.fhir_base, EVERYTHING)
        run = run_sync(world, conn, types=["Observation"])
    assert run.status == "failed"
    error = run.failed_types["Observation"]
    assert "search_forbidden" in error and "category=vital-signs" in error and "laboratory" not in error
    assert _stored_ids(world, conn) == ["laboratory-1", "social-history-1"]
    assert cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "Observation") == OLD_MARK
    assert sorted(q["category"][0] for q in fake.query_of("/fhir/Observation")) == [
        "laboratory",
        "social-history",
        "vital-signs",
    ]


def test_sal21_lab_only_grant_searches_only_laboratory_and_keeps_the_mark(world: SyncWorld) -> None:
    """SAL-21: with a lab-only grant the categories never granted are not asked for (no 403 to absorb), and the
    type completes with a warning; its mark stays where it was, since it stands for every category of the type."""
    with serve(_epic_server({"vital-signs", "social-history"})) as fake:
        conn = _epic_connection(world, fake.fhir_base, LAB_ONLY)
        run = run_sync(world, conn, types=["Observation"])
    assert run.status == "completed", run.failed_types
    assert [q["category"] for q in fake.query_of("/fhir/Observation")] == [["laboratory"]]
    assert _stored_ids(world, conn) == ["laboratory-1"]
    assert cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "Observation") == OLD_MARK


def test_sal21_a_widened_grant_finds_the_history_of_the_categories_it_adds(world: SyncWorld) -> None:
    """A lab-only run, then the patient grants every category: the vital-signs and social-history resources last
    updated long before the lab-only run must still arrive. Had the lab-only run moved the type's mark, the next
    run would ask the new categories only for changes after it and never fetch their history (found in review)."""
    fake = FakeFhir()

    def observations(_path: str, query: dict[str, list[str]]) -> Reply:
        category = query.get("category", [""])[0]
        since = query.get("_lastUpdated", [""])[0]
        old = _obs(f"{category}-1", category)  # last updated before every mark below
        fresh = since.startswith("gt") and since[2:] >= "2026-10-15"
        return bundle([] if fresh else [old], last_updated="2026-10-20T00:00:00Z")

    fake.routes["/fhir/Observation"] = observations
    fake.routes["/fhir/metadata"] = lambda _p, _q: (200, {"Content-Type": "application/fhir+json"}, _LAST_UPDATED)
    with serve(fake):
        conn = _epic_connection(world, fake.fhir_base, LAB_ONLY)
        assert run_sync(world, conn, types=["Observation"]).status == "completed"
        with world.env.db.locked_session() as session:
            row = session.get(Connection, conn)
            assert row is not None
            row.granted_scopes = EVERYTHING
            session.commit()
        assert run_sync(world, conn, types=["Observation"]).status == "completed"
    assert any("_lastUpdated" in q for q in fake.query_of("/fhir/Observation")), "the searches used the mark"
    assert _stored_ids(world, conn) == ["laboratory-1", "social-history-1", "vital-signs-1"]
    assert cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "Observation") == datetime(
        2026, 10, 20, tzinfo=UTC
    )
