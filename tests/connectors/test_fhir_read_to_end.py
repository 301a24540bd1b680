"""A lookup's search read to its end (``FhirClient.search_pages`` with ``stop_at_repeat=False``, DWB-32/33): a
match repeated on a later page (pages that overlap by one) does not stop it, while the sync's pager still stops
there (BDX-29)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from connectors.errors import SearchIncompleteError
from connectors.fhir import FhirClient
from connectors.tokens import StaticTokenSource
from tests.connectors.helpers import BASE, TOKEN, Script, bundle


def read_to_end(client: FhirClient, resource_type: str, params: dict[str, str] | None = None) -> Any:
    """The lookup's pager: every page, a repeated match read past."""
    return client.search_pages(resource_type, params, stop_at_repeat=False)


def _client(script: Script) -> FhirClient:
    return FhirClient(BASE, StaticTokenSource(TOKEN), http=script.client())


def _page(ids: list[int], next_url: str | None = None, total: int | None = None) -> httpx.Response:
    body = bundle([{"resource": {"resourceType": "DocumentReference", "id": f"d{i}"}} for i in ids], next_url)
    if total is not None:
        body["total"] = total
    return httpx.Response(200, content=orjson.dumps(body), headers={"Content-Type": "application/fhir+json"})


def _overlapping(total: int | None = None) -> list[httpx.Response]:
    """Three pages overlapping by one: a relative next link, then an absolute one, then none."""
    return [
        _page([1, 2], "DocumentReference?_page=2", total),
        _page([2, 3], f"{BASE}/DocumentReference?_page=3"),
        _page([3, 4]),
    ]


def _ids(pages: list[Any]) -> list[list[str]]:
    return [[r["id"] for r in p.resources] for p in pages]


def test_dwb33_overlapping_pages_are_read_to_the_end_then_said_to_be_unproven() -> None:
    """Every page is read, relative and absolute next links followed; after the last one the listing says a match
    came again (no ``total`` shows nothing was skipped), so the caller may search again with what it read."""
    script = Script(*_overlapping())
    pages = read_to_end(_client(script), "DocumentReference", {"patient": "p1"})
    read = [next(pages) for _ in range(3)]
    with pytest.raises(SearchIncompleteError) as info:
        next(pages)
    assert _ids(read) == [["d1", "d2"], ["d2", "d3"], ["d3", "d4"]]
    assert (info.value.reason, info.value.received) == ("repeated_match", 4)
    assert [str(r.url) for r in script.requests[1:]] == [f"{BASE}/DocumentReference?_page={n}" for n in (2, 3)]


def test_bdx29_the_syncs_pager_still_stops_at_the_repeat() -> None:
    """The sync guards its mark: the same server's page 2 repeats d2, and its pager stops there (page 3 unread)."""
    script = Script(*_overlapping())
    pages = _client(script).search_pages("DocumentReference", {"patient": "p1"})
    assert _ids([next(pages), next(pages)]) == [["d1", "d2"], ["d2", "d3"]]
    with pytest.raises(SearchIncompleteError) as info:
        next(pages)
    assert info.value.reason == "repeated_match" and len(script.requests) == 2


def test_dwb33_a_total_every_match_reached_makes_overlapping_pages_whole() -> None:
    """The first page says 4 matches and 4 distinct ones arrived: the overlap skipped none."""
    pages = list(read_to_end(_client(Script(*_overlapping(total=4))), "DocumentReference"))
    assert _ids(pages)[-1] == ["d3", "d4"]


def test_dwb33_a_missing_next_link_short_of_the_total_and_a_looping_link_still_end_the_lookup() -> None:
    """No next link while the total says more (``no_next``), and a next link already followed (``repeated_next``)."""
    short = Script(_page([1, 2], "DocumentReference?_page=2", total=5), _page([2, 3]))
    with pytest.raises(SearchIncompleteError) as info:
        list(read_to_end(_client(short), "DocumentReference"))
    assert info.value.reason == "no_next"
    loop = f"{BASE}/DocumentReference?_page=2"
    looping = Script(_page([1], loop), _page([1, 2], loop))
    with pytest.raises(SearchIncompleteError) as info:
        list(read_to_end(_client(looping), "DocumentReference"))
    assert info.value.reason == "repeated_next"


def test_read_to_end_refuses_a_name_that_is_no_resource_type() -> None:
    with pytest.raises(ValueError, match="not a FHIR resource type"):
        read_to_end(_client(Script()), "../Patient")
