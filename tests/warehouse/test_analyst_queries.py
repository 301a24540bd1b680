"""Every ```sql block of docs/ANALYSTS.md runs on DuckDB and PostgreSQL, answers something, and answers the same.

Rows are compared with their Python types (a float on one side and a Decimal on the other is a difference,
not something to round away); only the order of a row's values and the column names are taken as they come.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.warehouse.analyst_data import SHARED_MRN, analyst_pair
from tests.warehouse.conftest import land, resource
from warehouse import VIEW_NAMES, LandingZone, Warehouse
from warehouse.duckdb_backend import DuckDBWarehouse
from warehouse.snapshot import publish_snapshot

pytestmark = pytest.mark.postgres
__all__ = ["analyst_pair"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "ANALYSTS.md"
_BLOCK = re.compile(r"^```sql\n(.*?)^```", re.DOTALL | re.MULTILINE)
_HEADING = re.compile(r"^#+ (.+)$", re.MULTILINE)


def doc_queries() -> list[tuple[str, str]]:
    """(id, sql) of every ```sql block, the id naming the heading above it."""
    text = DOC.read_text(encoding="utf-8")
    out: list[tuple[str, str]] = []
    for n, m in enumerate(_BLOCK.finditer(text)):
        headings = _HEADING.findall(text, 0, m.start())
        title = re.sub(r"[^a-z0-9]+", "-", headings[-1].lower()).strip("-") if headings else "top"
        out.append((f"{n:02d}-{title}", m.group(1).strip().rstrip(";")))
    return out


QUERIES = doc_queries()


def _answer(wh: Warehouse, sql: str) -> tuple[list[str], list[tuple[tuple[str, Any], ...]]]:
    rows = list(wh.iter_rows(sql))
    names = list(rows[0]) if rows else []
    return names, [tuple((type(v).__name__, v) for v in r.values()) for r in rows]


def test_the_doc_has_every_question() -> None:
    titles = " ".join(q for q, _ in QUERIES)
    for topic in (
        "age-band",
        "vital",
        "creatinine",
        "lab",
        "out-of",
        "active-conditions",
        "medications",
        "severe-allergic-reactions",
        "anaphylaxis",
        "encounters-per-month",
        "distinct-people",
    ):
        assert topic in titles, topic


@pytest.mark.parametrize(("title", "sql"), QUERIES, ids=[q for q, _ in QUERIES])
def test_doc_query_gives_identical_answers(analyst_pair: tuple[Warehouse, Warehouse], title: str, sql: str) -> None:
    duck, pg = analyst_pair
    duck_names, duck_rows = _answer(duck, sql)
    pg_names, pg_rows = _answer(pg, sql)
    assert duck_rows, f"{title}: no rows on DuckDB"
    assert duck_names == pg_names
    assert duck_rows == pg_rows


def _under(fragment: str, index: int = 0) -> str:
    """The ``index``-th query under the heading whose id contains ``fragment``."""
    return [sql for title, sql in QUERIES if fragment in title][index]


def test_known_answers(analyst_pair: tuple[Warehouse, Warehouse]) -> None:
    """A few answers checked by hand against the fixture data (on DuckDB; PostgreSQL is equal by the test above)."""
    duck, _ = analyst_pair
    people = list(duck.iter_rows(_under("distinct-people")))
    # tenant-1: four sandbox patients + b-pat1 (pat0 again, shared MRN) + b-pat2; tenant-2: c-pat1, never linked
    assert people == [
        {"tenant_id": "tenant-1", "patient_rows": 6, "people": 5},
        {"tenant_id": "tenant-2", "patient_rows": 1, "people": 1},
    ]
    creatinine = [r for r in duck.iter_rows(_under("creatinine")) if r["connection_id"] == "conn-b"]
    assert creatinine == [
        {"connection_id": "conn-b", "patient_id": "b-pat1", "creatinine": 1.9, "unit": "mg/dL", "effective": "2025-03"}
    ]
    out_of_range = [(r["connection_id"], r["id"]) for r in duck.iter_rows(_under("out-of"))]
    assert out_of_range == [("conn-b", "b-obs1")]
    traced = [
        (r["person_key"], r["connection_id"], r["patient_id"]) for r in duck.iter_rows(_under("distinct-people", 1))
    ]
    assert traced == [("conn-a/pat0", "conn-a", "pat0"), ("conn-a/pat0", "conn-b", "b-pat1")]
    links = [(r["connection_id"], r["identifier_value"]) for r in duck.iter_rows(_under("distinct-people", 2))]
    assert links == [("conn-a", SHARED_MRN), ("conn-b", SHARED_MRN)]
    severe = [(r["id"], r["reaction_index"], r["manifestation_code"]) for r in duck.iter_rows(_under("severe"))]
    assert severe == [("b-alg1", 0, "126485001"), ("b-alg1", 0, "39579001")]  # one reaction, two manifestations
    anaphylaxis = [
        (r["id"], r["reaction_index"], r["manifestation_code"]) for r in duck.iter_rows(_under("anaphylaxis"))
    ]
    assert anaphylaxis == [("b-alg1", 0, "39579001"), ("b-alg1", 2, "ANA")]  # reaction 2: SNOMED CT is its 2nd coding


def test_doc_queries_answer_the_same_on_the_analyst_snapshot(analyst_pair: tuple[Warehouse, Warehouse]) -> None:
    """DuckDB analysts open the published snapshot (docs/ANALYSTS.md): its tables answer like the live views."""
    duck, _ = analyst_pair
    assert isinstance(duck, DuckDBWarehouse)
    snapshot = publish_snapshot(duck, VIEW_NAMES)
    current = duck.path.parent / "analyst" / "current"
    assert snapshot.current == current
    con = duckdb.connect(str(current / "analyst.duckdb"), read_only=True)
    try:
        for title, sql in QUERIES:
            cur = con.execute(sql)
            names = [d[0] for d in cur.description or ()]
            rows = [tuple((type(v).__name__, v) for v in r) for r in cur.fetchall()]
            assert (names, rows) == _answer(duck, sql), title
    finally:
        con.close()
    parquet = str(current / "observation.parquet").replace("'", "''")
    with duckdb.connect() as mem:  # any session reads the Parquet files, nothing is locked
        from_parquet = mem.execute(f"SELECT count(*) FROM read_parquet('{parquet}')").fetchone()
    assert from_parquet == (len(list(duck.iter_rows("SELECT id FROM observation"))),)


def _timed(rid: str, category: str, code: str, value: float, **time: Any) -> dict[str, Any]:
    coded = {"coding": [{"system": "http://loinc.org", "code": code}]}
    return resource(
        rid,
        status="final",
        category=[{"coding": [{"code": category}]}],
        code=coded,
        subject={"reference": "Patient/p1"},
        valueQuantity={"value": value, "unit": "u"},
        **time,
    )


def test_latest_queries_place_a_time_sent_as_a_period_end(wh: Warehouse, zone: LandingZone) -> None:
    """The doc's "latest" queries order by COALESCE(effective, effective_end), as its table notes tell analysts
    to: a newer result sent as an effectivePeriod with only its end (effective NULL) is the latest, not the
    oldest, and a blood-pressure panel sent so is found."""
    bp = {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}
    systolic = {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}
    panels = [
        resource(
            rid,
            status="final",
            category=[{"coding": [{"code": "vital-signs"}]}],
            code=bp,
            subject={"reference": "Patient/p1"},
            component=[{"code": systolic, "valueQuantity": {"value": value}}],
            **time,
        )
        for rid, value, time in (
            ("bp-old", 110, {"effectiveDateTime": "2024-01-05"}),
            ("bp-new", 150, {"effectivePeriod": {"end": "2025-06-01"}}),
        )
    ]
    observations = [
        _timed("lab-old", "laboratory", "2160-0", 1.0, effectiveDateTime="2024-01-05"),
        _timed("lab-new", "laboratory", "2160-0", 2.0, effectivePeriod={"end": "2025-06-01"}),
        _timed("hr-old", "vital-signs", "8867-4", 60.0, effectiveDateTime="2024-01-05"),
        _timed("hr-new", "vital-signs", "8867-4", 80.0, effectivePeriod={"end": "2025-06-01"}),
        *panels,
    ]
    wh.upsert(land(zone, observations))
    wh.refresh_flat_tables()
    for fragment, value in (("creatinine", "creatinine"), ("every-lab", "value_quantity")):
        assert [r[value] for r in wh.iter_rows(_under(fragment))] == [2.0], fragment
    vitals = [(r["code"], r["value_quantity"]) for r in wh.iter_rows(_under("vital"))]
    assert vitals == [("8867-4", 80.0)]
    assert [r["systolic"] for r in wh.iter_rows(_under("blood-pressure"))] == [150.0]
