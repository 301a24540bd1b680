"""DWB-33: what an identifier search answer proves, against a scripted FHIR server over a real socket: only the
draft's exact {system, value} is the draft's, an error reported in the answer voids it, and only the first page's
self link says which parameters were applied (later pages' links may be opaque paging tokens)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import orjson

from connectors.fhir import FhirClient
from connectors.tokens import StaticTokenSource
from connectors.writeback.note import identifier_system
from engine.writeback.lookup import IdentifierLookup, find_by_identifier
from tests.engine.fake_fhir import FakeFhir, Reply, serve
from tests.engine.writeback_helpers import FAST

_DRAFT = SimpleNamespace(id="n1", tenant_id="t1", patient_id="p1", draft_id="d1")
_OURS = {
    "resourceType": "DocumentReference",
    "id": "doc-1",
    "identifier": [{"system": identifier_system("t1"), "value": "d1"}],
}


def _page(entries: list[dict[str, Any]], links: dict[str, str]) -> Reply:
    body = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": rel, "url": url} for rel, url in links.items()],
        "entry": entries,
    }
    return 200, {"Content-Type": "application/fhir+json"}, orjson.dumps(body)


def _lookup(fake: FakeFhir) -> IdentifierLookup:
    with serve(fake), httpx.Client() as http:
        client = FhirClient(fake.fhir_base, StaticTokenSource("tok"), http=http)
        return find_by_identifier(client, _DRAFT, FAST)  # type: ignore[arg-type]


def _applied_self(fake: FakeFhir) -> str:
    return f"{fake.fhir_base}/DocumentReference?patient=p1&identifier={identifier_system('t1')}|d1"


def test_dwb33_the_drafts_value_under_another_system_is_not_the_draft() -> None:
    """A note whose identifier has this draft's value under another system (another tenant's, another vendor's
    numbering) is not this draft's note: found is none."""
    fake = FakeFhir()
    theirs = {**_OURS, "identifier": [{"system": identifier_system("t2"), "value": "d1"}]}
    fake.routes["/fhir/DocumentReference"] = lambda _p, _q: _page(
        [{"resource": theirs, "search": {"mode": "match"}}], {"self": _applied_self(fake)}
    )
    found = _lookup(fake)
    assert (found.found, found.matches, found.ignored) == (None, [], False)


def test_dwb33_an_error_reported_in_the_search_answer_makes_it_no_evidence() -> None:
    """An OperationOutcome entry of severity ``error`` (whatever its code and words) says the search went wrong: its
    answer is no evidence (``ignored``), not a match to write the note with nor a "none" to send it on."""
    fake = FakeFhir()
    error = {"severity": "error", "code": "processing", "diagnostics": "search timed out on a shard"}
    entries = [
        {"resource": _OURS, "search": {"mode": "match"}},
        {"resource": {"resourceType": "OperationOutcome", "issue": [error]}, "search": {"mode": "outcome"}},
    ]
    fake.routes["/fhir/DocumentReference"] = lambda _p, _q: _page(entries, {"self": _applied_self(fake)})
    found = _lookup(fake)
    assert found.ignored and found.found is None


def test_dwb33_a_later_pages_opaque_self_link_does_not_void_the_search() -> None:
    """The first page's self link names ``identifier``; the second's is a paging token naming no parameter. The
    search was applied: the match on the second page is the draft's note."""
    fake = FakeFhir()

    def route(_p: str, query: dict[str, list[str]]) -> Reply:
        if "_page" in query:
            token = f"{fake.fhir_base}/DocumentReference?_page=2"
            return _page([{"resource": _OURS, "search": {"mode": "match"}}], {"self": token})
        links = {"self": _applied_self(fake), "next": f"{fake.fhir_base}/DocumentReference?_page=2"}
        return _page([], links)

    fake.routes["/fhir/DocumentReference"] = route
    found = _lookup(fake)
    assert not found.ignored and found.found is not None and found.found["id"] == "doc-1"
