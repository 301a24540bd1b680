"""How a searchset page's ``entry`` and ``link`` are read (BDX-29): what FHIR allows is accepted, and what cannot be
read is a FhirError naming the element, never read as nothing (the mark would move past what it held).
Over a real socket: tests/engine/test_searchset_shapes.py."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.errors import FhirError
from connectors.fhir import FhirClient
from connectors.fhir.search import parse_search_bundle
from connectors.tokens import StaticTokenSource
from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.helpers import recording_policy

URL = "https://ehr.example/fhir/Observation?patient=p1&_lastUpdated=gt2026-01-01T00:00:00.000Z"
OBS = {"resourceType": "Observation", "id": "o1"}


def _page(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", **fields}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"entry": {"resource": OBS}}, r"Bundle\.entry is a JSON object, not an array"),
        ({"link": {"relation": "next", "url": "Observation?p=2"}}, r"Bundle\.link is a JSON object, not an array"),
        ({"entry": [{"resource": OBS}, "o2"]}, r"Bundle\.entry\[1\] is a JSON string, not an object"),
        ({"entry": [{"resource": [OBS]}]}, r"Bundle\.entry\[0\]\.resource is a JSON array, not an object"),
        ({"link": [{"relation": "self", "url": URL}, {"relation": "next", "url": 2}]}, r"Bundle\.link\[1\] \(next\)"),
    ],
    ids=["entry_object", "link_object", "entry_string", "resource_array", "next_url_number"],
)
def test_bdx29_an_entry_or_link_that_cannot_be_read_is_an_error_naming_it(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(FhirError, match=named) as info:
        parse_search_bundle(URL, _page(**fields), None)
    assert "p1" not in str(info.value)  # the search's values stay out of the message (redacted URL)


@pytest.mark.parametrize("relation", ["Next", "NEXT", "next"])
def test_bdx29_link_relations_compare_case_insensitively(relation: str) -> None:
    links = [{"relation": "Self", "url": URL}, {"relation": relation, "url": "Observation?page=2"}]
    page = parse_search_bundle(URL, _page(link=links, entry=[{"resource": OBS}]), None)
    assert page.next_url == "https://ehr.example/fhir/Observation?page=2"
    assert page.self_url == URL


def test_what_fhir_allows_is_still_read_as_before() -> None:
    """No ``entry`` (no match), a null one, an entry without a resource (nothing to land), a link of a relation
    ehrsync does not use without a URL, and the first link of a relation winning."""
    assert parse_search_bundle(URL, _page(), None).resources == []
    assert parse_search_bundle(URL, _page(entry=None, link=None), None).next_url is None
    links = [
        {"relation": "previous"},
        {"relation": "next", "url": "Observation?page=2"},
        {"relation": "Next", "url": "Observation?page=9"},
    ]
    page = parse_search_bundle(URL, _page(entry=[{"fullUrl": "urn:uuid:x"}, {"resource": OBS}], link=links), None)
    assert [r["id"] for r in page.resources] == ["o1"]
    assert page.next_url == "https://ehr.example/fhir/Observation?page=2"


def test_an_unmarked_entry_of_another_type_is_an_include_of_a_type_search() -> None:
    """R4 ``Bundle.entry.search.mode`` is 0..1: a Patient or Medication sent with none beside the matches of an
    Observation search is an include. Marked ``match``, or with no type searched, it stays a match (landed, or
    quarantined as of the wrong type: seen, never dropped); an OperationOutcome stays an outcome."""
    patient, outcome = {"resourceType": "Patient", "id": "p1"}, {"resourceType": "OperationOutcome", "issue": []}
    entries = [
        {"resource": OBS},
        {"resource": patient},
        {"resource": {"resourceType": "Medication", "id": "m1"}, "search": {"mode": "match"}},
        {"resource": outcome},
    ]
    page = parse_search_bundle(URL, _page(entry=entries), None, "Observation")
    assert [r["id"] for r in page.resources] == ["o1", "m1"]
    assert page.included == [patient] and page.outcomes == [outcome]
    untyped = parse_search_bundle(URL, _page(entry=entries), None)
    assert [r["id"] for r in untyped.resources] == ["o1", "p1", "m1"] and untyped.included == []


def test_a_200_operation_outcome_instead_of_a_bundle_keeps_its_severity_and_codes(
    ehr: SandboxServer, backend: BackendClient
) -> None:
    """A server answering a search 200 with an OperationOutcome (the sandbox ``echo`` fault: its diagnostics quote
    the request and the patient): the error says its issues as an error status's do (severity, code, expression,
    coding codes), and keeps the outcome (``issue_codes``, ``is_transient``), never its diagnostics. Before, it
    said only ``'OperationOutcome', expected a Bundle``."""
    client = FhirClient(ehr.fhir_base, StaticTokenSource(backend.mint()), retry=recording_policy([]))
    ehr.admin.set_fault("echo", path="/fhir/Encounter", body_status=200, echo_as="outcome", error="too-costly")
    with pytest.raises(FhirError) as info:
        list(client.search_pages("Encounter", {"patient": "pat0"}))
    error = info.value
    assert "returned 'OperationOutcome', expected a Bundle (issues: error too-costly)" in str(error)
    assert error.status == 200 and error.issue_codes == ["too-costly"]
    assert "pat0" not in str(error) and "GET /fhir/Encounter" not in str(error)  # no diagnostics, redacted URL
