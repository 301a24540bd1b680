"""Analyst views on PostgreSQL are queried live, so refreshing them must not stall behind an analyst: unchanged
views are left alone (no lock taken), and a changed one waits at most ``lock_timeout``; plus the patient reference
check on both backends."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.warehouse.conftest import land, resource
from warehouse import VIEW_NAMES, LandingZone, Warehouse, open_warehouse
from warehouse._sql import POSTGRES
from warehouse.postgres_backend import psycopg_conninfo
from warehouse.snapshot import describe_views
from warehouse.sof import compile_view, load_view_definition
from warehouse.view_checks import patient_references
from warehouse.view_refresh import AnalystViewsBusyError, refresh_analyst_views
from warehouse.views import PROVENANCE_COLUMNS, VIEWDEF_DIR

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Warehouse]:
    with open_warehouse(postgres_url) as wh:
        yield wh


def _comments(url: str) -> dict[str, str]:
    with psycopg.connect(psycopg_conninfo(url)) as con:
        rows = con.execute(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c WHERE c.relkind = 'v'"
        ).fetchall()
    return {str(n): str(c) for n, c in rows}


def test_only_changed_views_are_recreated(pg: Warehouse, postgres_url: str) -> None:
    assert refresh_analyst_views(pg) == list(VIEW_NAMES)
    assert refresh_analyst_views(pg) == []  # nothing changed: nothing touched
    with psycopg.connect(psycopg_conninfo(postgres_url), autocommit=True) as con:
        con.execute("COMMENT ON VIEW observation IS 'an older definition'")
    assert refresh_analyst_views(pg) == ["observation"]
    assert set(_comments(postgres_url)) >= set(VIEW_NAMES)


def test_an_incompatible_older_view_is_dropped_and_recreated(pg: Warehouse, postgres_url: str) -> None:
    with psycopg.connect(psycopg_conninfo(postgres_url), autocommit=True) as con:
        con.execute("CREATE VIEW observation AS SELECT 1 AS something_else")
    assert refresh_analyst_views(pg) == list(VIEW_NAMES)
    assert "patient_id" in dict(describe_views(pg, ["observation"])[0].columns)


# columns a release added to views analysts already had: each goes at the END of its view
_ADDED = {
    "allergy_intolerance": {"last_reaction_occurrence"},
    "allergy_intolerance_reaction": {"manifestation_index", "substance_system", "exposure_route_system"},
}


def _without(select: list[dict[str, Any]], names: set[str]) -> list[dict[str, Any]]:
    out = []
    for node in select:
        node = {**node, "column": [c for c in node.get("column", []) if c["name"] not in names]}
        node["select"] = _without(node.get("select", []), names)
        if node["column"] or node["select"] or "forEach" in node or "forEachOrNull" in node:
            out.append(node)
    return out


def test_columns_added_at_the_end_replace_the_views_in_place(pg: Warehouse, postgres_url: str) -> None:
    """Views as the previous release made them (today's definitions without ``_ADDED``), each read by an analyst's
    own view: the upgrade replaces them with ``CREATE OR REPLACE`` (new columns last), so the analyst's views stay.
    A column inserted before existing ones would need every view dropped, which the analyst's views forbid."""
    refresh_analyst_views(pg)
    with psycopg.connect(psycopg_conninfo(postgres_url), autocommit=True) as con:
        for name, added in _ADDED.items():
            raw = json.loads((VIEWDEF_DIR / f"{name}.json").read_text())
            old = compile_view(
                load_view_definition({**raw, "select": _without(raw["select"], added)}),
                POSTGRES,
                extra_columns=PROVENANCE_COLUMNS,
            )
            con.execute(f'DROP VIEW "{name}"')
            con.execute(f'CREATE VIEW "{name}" AS {old.sql}')
            con.execute(f'CREATE VIEW "mine_{name}" AS SELECT id, patient_id FROM "{name}"')
        con.execute('DROP VIEW "allergy_intolerance_reaction_coding"')  # new in the upgrade
    assert sorted(refresh_analyst_views(pg)) == sorted([*_ADDED, "allergy_intolerance_reaction_coding"])
    with psycopg.connect(psycopg_conninfo(postgres_url), autocommit=True) as con:
        for name, added in _ADDED.items():
            assert con.execute(f'SELECT count(*) FROM "mine_{name}"').fetchone() == (0,)
            columns = [c for c, _ in describe_views(pg, [name])[0].columns]
            assert set(columns[-len(added) :]) == added, name


def _readable_as(url: str, role: str) -> dict[str, bool]:
    """Which analyst views ``role`` may SELECT from."""
    with psycopg.connect(psycopg_conninfo(url), autocommit=True) as con:
        cur = con.execute(
            "SELECT name, has_table_privilege(%s, quote_ident(name), 'SELECT') FROM unnest(%s::text[]) AS name",
            (role, list(VIEW_NAMES)),
        )
        return {str(n): bool(ok) for n, ok in cur.fetchall()}


def test_an_analyst_role_keeps_its_grants_when_the_views_are_recreated(pg: Warehouse, postgres_url: str) -> None:
    """docs/ANALYSTS.md's read-only role: a refresh that has to drop and recreate every view (a column inserted,
    renamed or dropped: an upgrade) gives each view back the grants it had (before, an analyst granted as the doc
    said got "permission denied" on every view), and the default privileges the doc asks for cover a view new in
    the upgrade."""
    granted, defaulted = (f"analyst_{uuid.uuid4().hex[:8]}" for _ in range(2))
    refresh_analyst_views(pg)
    with psycopg.connect(psycopg_conninfo(postgres_url), autocommit=True) as con:
        con.execute('DROP VIEW "allergy_intolerance_reaction"')  # a view the upgrade brings
        for role in (granted, defaulted):
            con.execute(f'CREATE ROLE "{role}"')
            con.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
        con.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "{defaulted}"')
        con.execute(f'GRANT SELECT, INSERT ON "patient" TO "{granted}" WITH GRANT OPTION')
        con.execute('DROP VIEW "observation"')
        con.execute('CREATE VIEW "observation" AS SELECT 1 AS something_else')  # an older, incompatible one
        con.execute(f'GRANT SELECT ON "observation" TO "{granted}", PUBLIC')
    assert refresh_analyst_views(pg) == list(VIEW_NAMES)  # every view dropped and recreated
    kept = _readable_as(postgres_url, granted)
    assert kept == {name: name != "allergy_intolerance_reaction" for name in VIEW_NAMES}
    assert _readable_as(postgres_url, defaulted) == dict.fromkeys(VIEW_NAMES, True)
    assert _readable_as(postgres_url, "public")["observation"]
    with psycopg.connect(psycopg_conninfo(postgres_url), autocommit=True) as con:
        privilege = "SELECT has_table_privilege(%s, 'patient', 'INSERT WITH GRANT OPTION')"
        assert con.execute(privilege, (granted,)).fetchone() == (True,)


def test_a_long_analyst_transaction_does_not_hang_the_refresh(pg: Warehouse, postgres_url: str) -> None:
    """The analyst reads a view in an open transaction (its lock lasts until it ends). A refresh with nothing
    changed returns at once; one that must replace that view gives up after lock_timeout with a clear error and
    leaves the views as they were; once the analyst's transaction ends, the refresh goes through."""
    refresh_analyst_views(pg)
    analyst = psycopg.connect(psycopg_conninfo(postgres_url))
    try:
        analyst.execute("SELECT count(*) FROM observation").fetchone()  # transaction open, view locked
        assert refresh_analyst_views(pg, lock_timeout_s=0.2) == []
        with psycopg.connect(psycopg_conninfo(postgres_url), autocommit=True) as admin:
            admin.execute("COMMENT ON VIEW patient IS 'an older definition'")  # not the analyst's view
            assert refresh_analyst_views(pg, lock_timeout_s=0.2) == ["patient"]
            admin.execute("COMMENT ON VIEW observation IS 'an older definition'")
        with pytest.raises(AnalystViewsBusyError, match="in use by another session"):
            refresh_analyst_views(pg, lock_timeout_s=0.2)
        assert _comments(postgres_url)["observation"] == "an older definition"  # rolled back whole
        assert analyst.execute("SELECT count(*) FROM observation").fetchone() == (0,)  # the analyst still reads
    finally:
        analyst.rollback()
        analyst.close()
    assert refresh_analyst_views(pg, lock_timeout_s=0.2) == ["observation"]


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_patient_references(backend: str, zone: LandingZone, tmp_path: object, request: pytest.FixtureRequest) -> None:
    """Passing: every Observation names a synced patient of its connection. Failing: counted, with example ids."""
    target = str(tmp_path) + "/wh.duckdb" if backend == "duckdb" else request.getfixturevalue("postgres_url")
    with open_warehouse(target) as wh:
        wh.upsert(land(zone, [resource("p1", resource_type="Patient")], resource_type="Patient", run_id="rp"))
        wh.upsert(land(zone, [resource("o1", subject={"reference": "Patient/p1"})], run_id="r1"))
        refresh_analyst_views(wh)
        assert patient_references(wh, "observation").ok
        dangling = resource("o2", subject={"reference": "Patient/p9"})
        other = resource("o3", subject={"reference": "Patient/p1"})  # p1 of another connection is not this one's
        wh.upsert(land(zone, [dangling, resource("o4")], run_id="r2"))
        wh.upsert(land(zone, [other], run_id="r3", connection_id="c2"))
        refs = patient_references(wh, "observation")
    assert (refs.rows, refs.missing, refs.dangling, refs.examples, refs.ok) == (4, 1, 2, ("o2", "o3", "o4"), False)
