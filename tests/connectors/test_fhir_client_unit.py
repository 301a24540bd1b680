"""FhirClient protocol edge cases over httpx.MockTransport (BDX-26..33, SAL-40, DWB-31/32/50/51)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from connectors.errors import (
    ConfigurationError,
    ContentTooLargeError,
    FhirError,
    FhirForbiddenError,
    FhirNotFoundError,
    FhirPreconditionFailedError,
    FhirServerError,
    FhirUnauthorizedError,
    FhirUnprocessableError,
    NeedsReauthError,
    RateLimitedError,
    SearchIncompleteError,
    SearchLinkExpiredError,
    SecurityPolicyError,
    TransportError,
)
from connectors.fhir import FhirClient, parse_location
from connectors.tokens import StaticTokenSource
from tests.connectors.helpers import BASE, TOKEN, Script, bundle, oo, recording_policy


def _client(script: Script, sleeps: list[float] | None = None, tokens: StaticTokenSource | None = None) -> FhirClient:
    return FhirClient(
        BASE,
        tokens or StaticTokenSource(TOKEN),
        http=script.client(),
        retry=recording_policy([] if sleeps is None else sleeps),
    )


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, content=orjson.dumps(body), headers={"Content-Type": "application/fhir+json", **(headers or {})}
    )


def _obs(i: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"o{i}"}


def test_bdx29_follows_relative_and_absolute_next_links_verbatim() -> None:
    opaque_abs = f"{BASE}/page?token=Zm9vYmFy%3D%3D&_getpages=abc"
    script = Script(
        _json(
            200,
            bundle([{"resource": _obs(1)}], next_url="Observation?_page=2&sig=x%2By"),
            {"Date": "Wed, 25 Nov 2026 10:00:00 GMT"},
        ),
        _json(200, bundle([{"resource": _obs(2)}], next_url=opaque_abs)),
        _json(200, bundle([{"resource": _obs(3)}])),
    )
    pages = list(
        _client(script).search_pages("Observation", {"patient": "p1", "_lastUpdated": "gt2026-01-01T00:00:00Z"})
    )
    assert [r["id"] for p in pages for r in p.resources] == ["o1", "o2", "o3"]
    first, second, third = (str(r.url) for r in script.requests)
    assert first == f"{BASE}/Observation?patient=p1&_lastUpdated=gt2026-01-01T00%3A00%3A00Z&_count=200"
    assert second == f"{BASE}/Observation?_page=2&sig=x%2By"  # relative link resolved, never edited
    assert third == opaque_abs
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in script.requests)
    assert all(r.headers["Accept"] == "application/fhir+json" for r in script.requests)


def test_bdx27_high_water_mark_comes_from_server_clock() -> None:
    script = Script(
        _json(200, bundle([], last_updated="2026-11-25T09:59:00Z"), {"Date": "Wed, 25 Nov 2026 10:00:00 GMT"}),
    )
    (page,) = _client(script).search_pages("Observation", {"patient": "p1"})
    assert (
        page.bundle_meta_last_updated is not None
        and page.bundle_meta_last_updated.isoformat() == "2026-11-25T09:59:00+00:00"
    )
    assert page.server_date is not None and page.server_date.isoformat() == "2026-11-25T10:00:00+00:00"
    assert page.high_water_mark == page.bundle_meta_last_updated
    script = Script(_json(200, bundle([]), {"Date": "Wed, 25 Nov 2026 10:00:00 GMT"}))
    (page,) = _client(script).search_pages("Observation")
    assert page.high_water_mark == page.server_date


def test_bdx29_total_is_not_used_to_stop_paging() -> None:
    body = bundle([{"resource": _obs(1)}], next_url="Observation?p=2")
    body["total"] = 1
    script = Script(_json(200, body), _json(200, bundle([{"resource": _obs(2)}])))
    pages = list(_client(script).search_pages("Observation"))
    assert len(pages) == 2 and pages[0].total == 1


def test_search_separates_include_and_outcome_entries() -> None:
    entries: list[dict[str, Any]] = [
        {"resource": _obs(1), "search": {"mode": "match"}},
        {"resource": {"resourceType": "Patient", "id": "p1"}, "search": {"mode": "include"}},
        {"resource": _notice("informational"), "search": {"mode": "outcome"}},
        {"resource": _obs(2)},  # no search.mode: a match
        {"fullUrl": "no-resource"},
    ]
    (page,) = _client(Script(_json(200, bundle(entries)))).search_pages("Observation")
    assert [r["id"] for r in page.resources] == ["o1", "o2"]
    assert [r["id"] for r in page.included] == ["p1"]
    assert len(page.outcomes) == 1


def _notice(code: str, severity: str = "information") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": severity, "code": code}]}


def test_bdx29_repeated_matches_do_not_count_toward_total() -> None:
    """An offset-paging server over changing data: page 2 repeats o1 and never sends o3. Four entries arrived for
    ``total`` 4, three distinct: the search stopped early."""
    first = {**bundle([{"resource": _obs(1)}, {"resource": _obs(2)}], next_url=f"{BASE}/Observation?p=2"), "total": 4}
    second = {**bundle([{"resource": _obs(4)}, {"resource": _obs(1)}]), "total": 4}
    pages = _client(Script(_json(200, first), _json(200, second))).search_pages("Observation")
    assert [len(next(pages).resources), len(next(pages).resources)] == [2, 2]  # every page is still yielded
    with pytest.raises(SearchIncompleteError, match="total 4, received 3, no next link") as info:
        next(pages)
    assert (info.value.received, info.value.total, info.value.reason) == (3, 4, "no_next")


def test_bdx29_a_hash_collision_can_only_make_a_search_look_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """The distinct matches are 8-byte hashes: should two ids share one, the search looks short of its ``total``
    and is searched again; it never looks complete with a match missing."""
    import connectors.fhir._distinct as distinct

    class Collides:
        def __init__(self, *_args: object, **_kwargs: object) -> None:
            pass

        def digest(self) -> bytes:
            return b"\x01" * 8

    monkeypatch.setattr(distinct, "blake2b", Collides)
    whole = {**bundle([{"resource": _obs(1)}, {"resource": _obs(2)}]), "total": 2}
    with pytest.raises(SearchIncompleteError) as info:
        list(_client(Script(_json(200, whole))).search_pages("Observation"))
    assert (info.value.received, info.value.total) == (1, 2)


def test_bdx29_a_page_behind_a_new_link_with_no_new_match_is_a_repeat() -> None:
    """A server ignoring its paging offset sends page 1 again under each new next link (no ``total``)."""
    page = bundle([{"resource": _obs(1)}, {"resource": _obs(2)}], next_url=f"{BASE}/Observation?p=2")
    again = bundle([{"resource": _obs(1)}, {"resource": _obs(2)}], next_url=f"{BASE}/Observation?p=3")
    with pytest.raises(SearchIncompleteError, match=r"paging repeats: .* no new match after 2 matches") as info:
        list(_client(Script(_json(200, page), _json(200, again))).search_pages("Observation"))
    assert info.value.reason == "repeated_page"
    empty = bundle([], next_url=f"{BASE}/Observation?p=3")  # an empty page repeats nothing: paging goes on
    script = Script(_json(200, page), _json(200, empty), _json(200, bundle([{"resource": _obs(3)}])))
    assert len(list(_client(script).search_pages("Observation"))) == 3


def test_bdx32_error_outcome_in_a_searchset_raises_after_the_page_without_its_diagnostics() -> None:
    """A ``search.mode=outcome`` entry with an error/fatal issue: matches are missing (``error_outcome``). The
    message names the severities and codes, never the diagnostics (it is logged and kept as the run's error)."""
    said = {"severity": "error", "code": "too-costly", "diagnostics": "too many\n for Jane\x00 Doe"}
    outcome = {"resourceType": "OperationOutcome", "issue": [said, {"severity": "warning", "code": "processing"}]}
    body = bundle([{"resource": _obs(1)}, {"resource": outcome, "search": {"mode": "outcome"}}], next_url="x?p=2")
    pages = _client(Script(_json(200, body))).search_pages("Observation")
    assert next(pages).resources == [_obs(1)]
    with pytest.raises(SearchIncompleteError) as info:
        next(pages)
    error = info.value
    assert error.reason == "error_outcome" and error.received == 1
    assert error.message.endswith("(severity error, warning; issues: too-costly, processing)")
    assert "Jane" not in str(error) and "too many" not in str(error)
    for severity in ("warning", "information"):
        body = bundle([{"resource": _obs(1)}, {"resource": _notice("x", severity), "search": {"mode": "outcome"}}])
        assert len(list(_client(Script(_json(200, body))).search_pages("Observation"))) == 1


@pytest.mark.parametrize("code", ["incomplete", "too-costly", "timeout"])
def test_bdx32_a_warning_saying_matches_are_missing_makes_the_search_incomplete(code: str) -> None:
    """FHIR's ``incomplete`` (and ``too-costly``, ``timeout``) say a searchset lacks matches whatever the
    severity; a server capping its results ("too many matches") may say so with a warning only."""
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": code}]}
    body = bundle([{"resource": _obs(1)}, {"resource": outcome, "search": {"mode": "outcome"}}])
    pages = _client(Script(_json(200, body))).search_pages("Observation")
    assert next(pages).resources == [_obs(1)]
    with pytest.raises(SearchIncompleteError, match="saying matches are missing") as info:
        next(pages)
    assert info.value.reason == "error_outcome"


def test_bdx29_a_match_of_an_earlier_page_again_without_total_is_a_shift() -> None:
    """Offset paging over changing data on a server that gives no ``total``: page 2 repeats o1 (moved to the end
    by an update) and so skipped a match; the repeat alone shows it. One match sent twice on one page does not."""
    first = bundle([{"resource": _obs(1)}, {"resource": _obs(2)}], next_url=f"{BASE}/Observation?p=2")
    second = bundle([{"resource": _obs(4)}, {"resource": _obs(1)}], next_url=f"{BASE}/Observation?p=3")
    pages = _client(Script(_json(200, first), _json(200, second))).search_pages("Observation")
    assert [len(next(pages).resources), len(next(pages).resources)] == [2, 2]
    with pytest.raises(SearchIncompleteError, match="a match of an earlier page came again") as info:
        next(pages)
    assert (info.value.received, info.value.total, info.value.reason) == (3, None, "repeated_match")
    twice = bundle([{"resource": _obs(1)}, {"resource": _obs(1)}, {"resource": _obs(2)}])
    assert len(list(_client(Script(_json(200, twice))).search_pages("Observation"))) == 1


def test_bdx29_an_entry_of_another_type_on_two_pages_is_no_shift() -> None:
    """A server may send resources a match refers to (its Patient, a Medication) without ``search.mode``, the
    same one on every page: they are not matches of the type search, so their repeat says nothing about offsets
    (it made every run of a legal server incomplete). A repeated match of the searched type still does."""
    patient = {"resourceType": "Patient", "id": "p1"}
    first = bundle([{"resource": _obs(1)}, {"resource": patient}], next_url=f"{BASE}/Observation?p=2")
    second = bundle([{"resource": _obs(2)}, {"resource": patient}])
    pages = list(_client(Script(_json(200, first), _json(200, second))).search_pages("Observation"))
    assert [[r["id"] for r in p.resources] for p in pages] == [["o1"], ["o2"]]
    assert [[r["id"] for r in p.included] for p in pages] == [["p1"], ["p1"]]  # an include, not a match


def test_bdx29_an_unmarked_entry_of_another_type_does_not_count_toward_total() -> None:
    """``total`` counts matches (R4): a Patient sent beside one Observation of a total of 2 does not make the
    search look whole."""
    patient = {"resourceType": "Patient", "id": "p1"}
    short = bundle([{"resource": _obs(1)}, {"resource": patient}]) | {"total": 2}
    with pytest.raises(SearchIncompleteError) as info:
        list(_client(Script(_json(200, short))).search_pages("Observation"))
    assert (info.value.reason, info.value.received, info.value.total) == ("no_next", 1, 2)


def test_bdx29_distinct_matches_are_counted_in_a_compact_table() -> None:
    from connectors.fhir._distinct import DistinctMatches

    seen = DistinctMatches()
    assert all(seen.add("Observation", f"id-{i}") for i in range(5000))  # grows past its first 1024 slots
    assert not any(seen.add("Observation", f"id-{i}") for i in range(5000))
    assert seen.add("Condition", "id-1") and len(seen) == 5001


def test_search_is_a_lazy_generator() -> None:
    script = Script(_json(200, bundle([{"resource": _obs(1)}], next_url="Observation?p=2")))
    pages = _client(script).search_pages("Observation")
    assert script.requests == []
    next(pages)
    assert len(script.requests) == 1  # the second page is only fetched when asked for


@pytest.mark.parametrize("status", [404, 410])
def test_bdx29_expired_paging_link_raises_typed_error(status: int) -> None:
    script = Script(
        _json(200, bundle([{"resource": _obs(1)}], next_url="Observation?p=2")), _json(status, oo("not-found"))
    )
    pages = _client(script).search_pages("Observation")
    next(pages)
    with pytest.raises(SearchLinkExpiredError) as info:
        next(pages)
    assert info.value.status == status and info.value.issue_codes == ["not-found"]


def test_search_first_page_404_is_not_an_expired_link() -> None:
    with pytest.raises(FhirNotFoundError):
        list(_client(Script(_json(404, oo("not-found")))).search_pages("Observation"))


def test_search_rejects_a_non_bundle_and_repeating_links() -> None:
    with pytest.raises(FhirError, match="expected a Bundle"):
        list(_client(Script(_json(200, _obs(1)))).search_pages("Observation"))
    loop = bundle([], next_url=f"{BASE}/Observation?p=2")
    with pytest.raises(FhirError, match="loops"):
        list(_client(Script(_json(200, loop), _json(200, loop))).search_pages("Observation"))


def test_search_that_stops_early_yields_what_came_then_says_so() -> None:
    """``total`` (here only on the first page) larger than what arrived with no ``next``: every page is still
    yielded, then SearchIncompleteError says how many of how many arrived."""
    first = {**bundle([{"resource": _obs(1)}], next_url=f"{BASE}/Observation?p=2"), "total": 3}
    last = bundle([{"resource": _obs(2)}])
    pages = _client(Script(_json(200, first), _json(200, last))).search_pages("Observation")
    seen = [next(pages).resources, next(pages).resources]
    with pytest.raises(SearchIncompleteError, match="total 3, received 2, no next link") as info:
        next(pages)
    assert seen == [[_obs(1)], [_obs(2)]]
    assert (info.value.received, info.value.total, info.value.reason) == (2, 3, "no_next")
    complete = {**bundle([{"resource": _obs(1)}]), "total": 1}
    assert len(list(_client(Script(_json(200, complete))).search_pages("Observation"))) == 1


@pytest.mark.parametrize("retry_after", ["7", "Wed, 25 Nov 2026 10:00:30 GMT"])
def test_bdx32_429_and_503_honour_retry_after_both_forms(retry_after: str) -> None:
    sleeps: list[float] = []
    script = Script(
        _json(429, oo("throttled"), {"Retry-After": retry_after}),
        httpx.Response(503, headers={"Retry-After": retry_after}),
        _json(200, bundle([{"resource": _obs(1)}])),
    )
    pages = list(_client(script, sleeps).search_pages("Observation"))
    assert len(pages) == 1
    expected = 7.0 if retry_after == "7" else 30.0
    assert sleeps == [pytest.approx(expected), pytest.approx(expected)]


def test_bdx32_429_exhausted_raises_rate_limited_with_retry_after() -> None:
    sleeps: list[float] = []
    script = Script(*[_json(429, oo("throttled"), {"Retry-After": "3"}) for _ in range(5)])
    with pytest.raises(RateLimitedError) as info:
        list(_client(script, sleeps).search_pages("Observation"))
    assert info.value.retry_after == 3.0 and info.value.issue_codes == ["throttled"]
    assert len(sleeps) == 4 and len(script.requests) == 5


def test_transient_5xx_and_transport_errors_are_retried_with_backoff() -> None:
    sleeps: list[float] = []
    refused = httpx.ConnectError("refused")
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")  # as httpx raises it
    script = Script(
        refused,
        httpx.ReadTimeout("slow"),
        httpx.Response(502),
        _json(500, oo("transient")),
        _json(200, {"resourceType": "Patient", "id": "p1"}),
    )
    assert _client(script, sleeps).read("Patient", "p1")["id"] == "p1"
    assert len(sleeps) == 4
    # A refused connection never reached the server: one quick retry, then backoff for the rest.
    assert [sleeps[0] == 0.5, 3.2 <= sleeps[1] <= 4.8, 6.4 <= sleeps[2] <= 9.6] == [True, True, True]


def test_transport_errors_after_retries_become_transport_error() -> None:
    script = Script(*[httpx.ReadTimeout("slow") for _ in range(5)])
    with pytest.raises(TransportError, match="5 attempt"):
        _client(script).read("Patient", "p1")


def test_server_error_after_retries_carries_operation_outcome() -> None:
    script = Script(*[_json(500, oo("exception")) for _ in range(5)])
    with pytest.raises(FhirServerError) as info:
        _client(script).read("Patient", "p1")
    assert info.value.status == 500 and info.value.issue_codes == ["exception"]


def test_401_refreshes_once_then_retries() -> None:
    tokens = StaticTokenSource(TOKEN, refresher=lambda: "tok-BBB")
    script = Script(httpx.Response(401), _json(200, {"resourceType": "Patient", "id": "p1"}))
    _client(script, tokens=tokens).read("Patient", "p1")
    assert [r.headers["Authorization"] for r in script.requests] == [f"Bearer {TOKEN}", "Bearer tok-BBB"]
    assert tokens.refresh_count == 1


def test_second_401_raises_fhir_unauthorized() -> None:
    tokens = StaticTokenSource(TOKEN, refresher=lambda: "tok-BBB")
    script = Script(httpx.Response(401), _json(401, oo("login")))
    with pytest.raises(FhirUnauthorizedError) as info:
        _client(script, tokens=tokens).read("Patient", "p1")
    assert info.value.issue_codes == ["login"] and tokens.refresh_count == 1
    assert TOKEN not in str(info.value) and "tok-BBB" not in str(info.value)


def test_401_without_refresh_path_raises_needs_reauth() -> None:
    with pytest.raises(NeedsReauthError):
        _client(Script(httpx.Response(401))).read("Patient", "p1")


def test_403_with_empty_body_is_forbidden() -> None:
    with pytest.raises(FhirForbiddenError) as info:
        _client(Script(httpx.Response(403))).read("Patient", "p1")
    assert info.value.operation_outcome is None and info.value.status == 403


def test_error_messages_never_include_query_strings() -> None:
    script = Script(_json(400, oo("invalid")))
    with pytest.raises(FhirError) as info:
        list(_client(script).search_pages("Patient", {"name": "Smith"}))
    assert "Smith" not in str(info.value) and info.value.url == f"{BASE}/Patient"


def test_sal40_next_link_to_another_host_is_refused() -> None:
    script = Script(_json(200, bundle([], next_url="https://evil.example/fhir/Observation?p=2")))
    pages = _client(script).search_pages("Observation")
    next(pages)
    with pytest.raises(SecurityPolicyError):
        next(pages)
    assert len(script.requests) == 1


def test_read_and_type_validation() -> None:
    client = _client(Script())
    with pytest.raises(ValueError, match="resource type"):
        client.read("patient", "1")
    with pytest.raises(ValueError, match="id"):
        client.read("Patient", "../admin")
    with pytest.raises(FhirError, match="did not return a Patient"):
        _client(Script(_json(200, _obs(1)))).read("Patient", "p1")


def test_capabilities_are_cached() -> None:
    script = Script(_json(200, {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}))
    client = _client(script)
    assert client.capabilities()["fhirVersion"] == "4.0.1"
    assert client.capabilities()["fhirVersion"] == "4.0.1"
    assert len(script.requests) == 1 and str(script.requests[0].url) == f"{BASE}/metadata"


def test_bad_base_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        FhirClient("http://ehr.example.org/fhir", StaticTokenSource(TOKEN))
    with pytest.raises(ConfigurationError):
        FhirClient("ehr.example.org/fhir", StaticTokenSource(TOKEN))


# --- create (draft-note DWB-31/32/50/51) ----------------------------------------------------------------


def _doc() -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current"}


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("DocumentReference/abc/_history/2", ("abc", "2")),
        (f"{BASE}/DocumentReference/abc/_history/7", ("abc", "7")),
        ("DocumentReference/abc", ("abc", None)),
        (f"{BASE}/DocumentReference/abc?x=1", ("abc", None)),
        # RFC 3986 §3.3 segment parameters (a servlet container's ``;jsessionid=``) are no part of the id or version
        (f"{BASE}/DocumentReference/abc;jsessionid=1A2B", ("abc", None)),
        (f"{BASE}/DocumentReference/abc/_history/3;jsessionid=1A2B", ("abc", "3")),
        (f"{BASE};v=1/DocumentReference;x=y/abc;a=b/_history;c=d/4;e=f", ("abc", "4")),
        ("DocumentReference/a%3Bb", ("a;b", None)),  # an encoded ";" is data, no parameter (no FHIR id: refused later)
        # a segment of parameters alone names nothing: never the resource type before it taken for the id
        (f"{BASE}/DocumentReference/;jsessionid=1A2B", (None, None)),
        (f"{BASE}/DocumentReference/;jsessionid=1A2B/_history/2", (None, "2")),
        (f"{BASE}/DocumentReference/abc/_history/;v=1", ("abc", None)),
        # a trailing "/" leaves the last segment empty: never the resource type before it taken for the id (an id
        # before it is named only given the type created: ``test_fhir_ids``)
        (f"{BASE}/DocumentReference/", (None, None)),
        ("DocumentReference/abc/", (None, None)),
        (f"{BASE}/DocumentReference/abc/_history/2/", ("abc", "2")),
        ("", (None, None)),
    ],
)
def test_dwb_parse_location_relative_absolute_history(location: str, expected: tuple[str, str | None]) -> None:
    """DWB-50: the id and version a create's ``Location`` names, its segments' parameters dropped."""
    assert parse_location(location) == expected


def test_dwb50_create_sends_prefer_and_tolerates_empty_201() -> None:
    script = Script(httpx.Response(201, headers={"Location": f"{BASE}/DocumentReference/d1/_history/1"}))
    result = _client(script).create(_doc(), if_none_exist="identifier=urn:x|1")
    request = script.requests[0]
    assert request.method == "POST" and str(request.url) == f"{BASE}/DocumentReference"
    assert request.headers["Prefer"] == "return=representation"
    assert request.headers["If-None-Exist"] == "identifier=urn:x|1"
    assert request.headers["Content-Type"].startswith("application/fhir+json")
    assert orjson.loads(request.content) == _doc()
    assert (result.status, result.id, result.version_id, result.resource, result.created) == (
        201,
        "d1",
        "1",
        None,
        True,
    )


def test_dwb_create_200_is_an_existing_match() -> None:
    body = {**_doc(), "id": "d9", "meta": {"versionId": "4"}}
    result = _client(Script(_json(200, body))).create(_doc(), if_none_exist="identifier=urn:x|1")
    assert (result.status, result.id, result.version_id, result.created) == (200, "d9", "4", False)


@pytest.mark.parametrize(("status", "error"), [(412, FhirPreconditionFailedError), (422, FhirUnprocessableError)])
def test_dwb51_create_failures_are_typed_with_outcome(status: int, error: type[FhirError]) -> None:
    with pytest.raises(error) as info:
        _client(Script(_json(status, oo("business-rule")))).create(_doc(), if_none_exist="identifier=urn:x|1")
    assert info.value.issue_codes == ["business-rule"]


def test_dwb32_unconditional_create_is_never_blindly_retried() -> None:
    script = Script(httpx.ReadTimeout("lost response"))
    with pytest.raises(TransportError):
        _client(script).create(_doc())
    script = Script(httpx.Response(502))
    with pytest.raises(FhirServerError):
        _client(script).create(_doc())
    assert len(script.requests) == 1


def test_dwb31_conditional_create_is_retried_after_a_lost_response() -> None:
    script = Script(httpx.ReadTimeout("lost"), httpx.Response(200, headers={"Location": "DocumentReference/d1"}))
    assert _client(script).create(_doc(), if_none_exist="identifier=urn:x|1").id == "d1"
    assert len(script.requests) == 2


# --- download ---------------------------------------------------------------------------------------------


def test_download_streams_hashes_and_renames(tmp_path: Path) -> None:
    import hashlib

    payload = b"x" * 200_000
    script = Script(httpx.Response(200, content=payload, headers={"Content-Type": "application/pdf"}))
    dest = tmp_path / "sub" / "note.pdf"
    got = _client(script).download("Binary/b1", dest, max_bytes=1_000_000, accept="application/pdf")
    assert got.path == dest and dest.read_bytes() == payload and got.size == len(payload)
    assert got.sha256 == hashlib.sha256(payload).hexdigest() and got.content_type == "application/pdf"
    assert str(script.requests[0].url) == f"{BASE}/Binary/b1"
    assert script.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert script.requests[0].headers["Accept"] == "application/pdf"
    assert list(dest.parent.iterdir()) == [dest]


def test_a_scratch_download_is_the_same_bytes_without_a_digest(tmp_path: Path) -> None:
    """Bulk files are landed and deleted at once: neither hashed nor synced (a tenth of an export's CPU)."""
    from connectors.fhir.download import stream_to_file

    payload = b'{"resourceType":"Patient","id":"p1"}\n' * 50_000
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=payload))
    with httpx.Client(transport=transport) as http, http.stream("GET", f"{BASE}/bulk/1.ndjson") as response:
        got = stream_to_file(response, tmp_path / "1.ndjson", 10_000_000, scratch=True)
    assert got.sha256 is None and got.size == len(payload) and got.path.read_bytes() == payload
    assert [p.name for p in tmp_path.iterdir()] == ["1.ndjson"]


def test_download_accepts_gzip_and_caps_decoded_size(tmp_path: Path) -> None:
    payload = b'{"a":1}\n' * 1000
    ok = Script(httpx.Response(200, content=gzip.compress(payload), headers={"Content-Encoding": "gzip"}))
    got = _client(ok).download("Binary/b1", tmp_path / "a", max_bytes=100_000, accept="*/*")
    assert got.path.read_bytes() == payload
    bomb = Script(httpx.Response(200, content=gzip.compress(b"\0" * 500_000), headers={"Content-Encoding": "gzip"}))
    with pytest.raises(ContentTooLargeError):
        _client(bomb).download("Binary/b1", tmp_path / "b", max_bytes=100_000, accept="*/*")
    assert not (tmp_path / "b").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_download_rejects_declared_oversize_early(tmp_path: Path) -> None:
    script = Script(httpx.Response(200, content=b"y" * 2048))
    with pytest.raises(ContentTooLargeError, match="Content-Length"):
        _client(script).download("Binary/b1", tmp_path / "f", max_bytes=1024, accept="*/*")
    assert list(tmp_path.iterdir()) == []


def test_sal40_download_from_another_host_goes_without_token(tmp_path: Path) -> None:
    script = Script(httpx.Response(200, content=b"pdf"), httpx.Response(200, content=b"pdf"))
    client = _client(script)
    client.download("https://cdn.example.net/signed/doc.pdf?sig=abc", tmp_path / "a", 100, "application/pdf")
    client.download("https://ehr.example.org/other-path/doc.pdf", tmp_path / "b", 100, "application/pdf")
    assert all("Authorization" not in r.headers for r in script.requests)


def test_rate_limit_spends_one_token_per_attempt_under_the_practice_key() -> None:
    from connectors.http import RateLimiter

    keys: list[str] = []

    class Spy(RateLimiter):
        def acquire(self, key: str, max_wait_s: float | None = None) -> float:
            keys.append(key)
            return 0.0

    script = Script(
        httpx.Response(429, headers={"Retry-After": "2"}), _json(200, {"resourceType": "Patient", "id": "p"})
    )
    client = FhirClient(
        BASE, StaticTokenSource(TOKEN), http=script.client(), retry=recording_policy([]), rate_limit=Spy(240, 60.0)
    )
    client.read("Patient", "p")
    assert keys == [BASE, BASE]


def test_sal40_redirect_off_the_base_drops_the_token(tmp_path: Path) -> None:
    script = Script(
        httpx.Response(302, headers={"Location": "b2"}),  # relative to the request URL
        httpx.Response(307, headers={"Location": "https://storage.example.net/signed?sig=1"}),
        httpx.Response(200, content=b"data"),
    )
    got = _client(script).download("Binary/b1", tmp_path / "f", max_bytes=100, accept="*/*")
    assert got.path.read_bytes() == b"data"
    assert [str(r.url) for r in script.requests] == [
        f"{BASE}/Binary/b1",
        f"{BASE}/Binary/b2",
        "https://storage.example.net/signed?sig=1",
    ]
    assert [("Authorization" in r.headers) for r in script.requests] == [True, True, False]


def test_redirects_are_bounded(tmp_path: Path) -> None:
    script = Script(*[httpx.Response(302, headers={"Location": f"Binary/b{i}"}) for i in range(6)])
    with pytest.raises(FhirError) as info:
        _client(script).download("Binary/b", tmp_path / "f", max_bytes=100, accept="*/*")
    assert info.value.status == 302


def test_bdx26_count_defaults_to_200_unless_given() -> None:
    script = Script(_json(200, bundle([])), _json(200, bundle([])), _json(200, bundle([])))
    client = _client(script)
    list(client.search_pages("Patient"))
    list(client.search_pages("Patient", [("_count", "50")]))
    list(client.search_pages("Patient", {"name": "x"}, count=None))
    assert [r.url.params.get_list("_count") for r in script.requests] == [["200"], ["50"], []]


def test_on_response_hook_sees_every_response_for_quota_headers() -> None:
    seen: list[tuple[int, str | None]] = []
    script = Script(
        httpx.Response(429, headers={"Retry-After": "1", "X-Ratelimit-Remaining": "0"}),
        _json(200, {"resourceType": "Patient", "id": "p"}, {"X-Ratelimit-Remaining": "99"}),
    )
    client = FhirClient(
        BASE,
        StaticTokenSource(TOKEN),
        http=script.client(),
        retry=recording_policy([]),
        on_response=lambda r: seen.append((r.status_code, r.headers.get("X-Ratelimit-Remaining"))),
    )
    client.read("Patient", "p")
    assert seen == [(429, "0"), (200, "99")]


def test_every_request_accepts_only_the_codings_ehrsync_decodes() -> None:
    """httpx's default ``Accept-Encoding`` adds ``br``/``zstd`` whenever an installed package provides them; a
    server may then answer with one, which ehrsync refuses (``connectors/transport/decoding.py``)."""
    script = Script(_json(200, {"resourceType": "Patient", "id": "p1"}))
    _client(script).read("Patient", "p1")
    assert script.requests[0].headers["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize("status", [404, 410])
def test_bdx29_a_first_page_answered_404_or_410_is_no_expired_link(status: int) -> None:
    """Only a ``next`` link expires (restart from the mark); the search URL itself answered 404/410 is the server's
    answer to the search (an unknown type, a gone endpoint), which a restart would only ask again."""
    script = Script(_json(status, {"resourceType": "OperationOutcome", "issue": []}))
    with pytest.raises(FhirError) as info:
        list(_client(script).search_pages("Observation"))
    assert not isinstance(info.value, SearchLinkExpiredError) and info.value.status == status
    assert len(script.requests) == 1
