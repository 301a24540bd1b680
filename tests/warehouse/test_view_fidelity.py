"""Analyst view values that differed between the backends or kept text that is not what the column names.

- A reference with a query string (``Patient/123?_format=json``) gave ``123?_format=json`` as ``patient_id``; a
  conditional reference (``Patient?identifier=...``) whose search value held ``/Patient/5`` gave ``5``. The key
  is now the id, or NULL for a reference that names no id.
"""

from __future__ import annotations

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone, Warehouse

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
