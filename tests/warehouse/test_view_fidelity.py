"""Analyst view values that differed between the backends or kept text that is not what the column names.

- A decimal ``-0.0`` (or ``-0``): PostgreSQL's JSONB stores numbers as ``numeric``, which has no negative zero, so
  its view said ``0``; DuckDB keeps the JSON text and said ``-0.0`` (also for ``-1e-400``, below a double's least
  magnitude). Both now say ``0`` (a positive zero).
- A reference with a query string (``Patient/123?_format=json``) gave ``123?_format=json`` as ``patient_id``; a
  conditional reference (``Patient?identifier=...``) whose search value held ``/Patient/5`` gave ``5``. The key
  is now the id, or NULL for a reference that names no id.
"""

from __future__ import annotations

import math

import orjson

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone, Warehouse

ZEROS = {
    "minus-zero-decimal": b"-0.0",
    "minus-zero": b"-0",
    "minus-zero-exponent": b"-0e5",
    "minus-tiny": b"-1e-400",
    "zero": b"0.0",
}


def test_a_negative_zero_decimal_is_a_positive_zero_on_both_backends(wh: Warehouse, zone: LandingZone) -> None:
    observations = [
        resource(rid, status="final", valueQuantity={"value": orjson.Fragment(raw)}) for rid, raw in ZEROS.items()
    ]
    wh.upsert(land(zone, observations))
    wh.refresh_flat_tables()
    got = {r["id"]: float(r["value_quantity"]) for r in wh.iter_rows("SELECT id, value_quantity FROM observation")}
    assert got == dict.fromkeys(ZEROS, 0.0)
    assert {rid: math.copysign(1.0, v) for rid, v in got.items()} == dict.fromkeys(ZEROS, 1.0)


REFERENCES = {
    "query": ("Patient/123?_format=json", "123"),
    "absolute-query": ("https://ehr.example/fhir/Patient/p-9?x=y/z", "p-9"),
    "history-query": ("Patient/7/_history/2?x=1", "7"),
    "fragment": ("Patient/8#frag", "8"),
    "conditional": ("Patient?identifier=http://hospital.example/Patient/5", None),
    "conditional-plain": ("Patient?identifier=http://hospital.example|5", None),
    "empty-id": ("Patient/?x=1", None),
    "plain": ("Patient/42", "42"),
    "absolute-history": ("https://ehr.example/fhir/Patient/p1/_history/2", "p1"),
    "other-type": ("Group/3?x=y", None),
}


def test_patient_id_is_the_id_or_null_never_text_with_a_query(wh: Warehouse, zone: LandingZone) -> None:
    observations = [resource(rid, status="final", subject={"reference": ref}) for rid, (ref, _) in REFERENCES.items()]
    wh.upsert(land(zone, observations))
    wh.refresh_flat_tables()
    got = {r["id"]: r["patient_id"] for r in wh.iter_rows("SELECT id, patient_id FROM observation")}
    assert got == {rid: want for rid, (_, want) in REFERENCES.items()}
