"""FhirClient against the real sandbox over a socket: paging, _lastUpdated marks, faults (BDX-26..33, SAL-40)."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest

from connectors.errors import RateLimitedError, SearchIncompleteError, SearchLinkExpiredError
from connectors.fhir import FhirClient
from connectors.fhir.search import MAX_EMPTY_PAGES
from connectors.tokens import StaticTokenSource
from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.helpers import recording_policy


def _client(ehr: SandboxServer, backend: BackendClient, sleeps: list[float], **policy: object) -> FhirClient:
    tokens = StaticTokenSource(backend.mint(), refresher=backend.mint)
    return FhirClient(ehr.fhir_base, tokens, retry=recording_policy(sleeps, **policy))


def _ids(client: FhirClient, resource_type: str, params: dict[str, str]) -> list[str]:
    return [r["id"] for page in client.search_pages(resource_type, params) for r in page.resources]


def test_bdx26_29_paging_with_last_updated_matches_one_big_page(ehr: SandboxServer, backend: BackendClient) -> None:
    client = _client(ehr, backend, [])
    small = _ids(client, "Observation", {"_lastUpdated": "gt2000-01-01T00:00:00Z", "_count": "40"})
    big = _ids(client, "Observation", {"_lastUpdated": "gt2000-01-01T00:00:00Z", "_count": "1000"})
    assert len(small) > 40 and len(small) == len(set(small))
    assert sorted(small) == sorted(big)


def test_bdx27_28_incremental_sync_from_server_high_water_mark(ehr: SandboxServer, backend: BackendClient) -> None:
    client = _client(ehr, backend, [])
    first = next(client.search_pages("Condition", {"_count": "200"}))
    mark = first.high_water_mark
    assert mark is not None and mark.tzinfo is not None
    changed = ehr.admin.mutate(update=3, seed=5)["updated"]
    since = (mark - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")  # BDX-28 overlap window
    seen = set()
    for resource_type in {ref.split("/")[0] for ref in changed}:
        seen |= {f"{resource_type}/{i}" for i in _ids(client, resource_type, {"_lastUpdated": f"gt{since}"})}
    assert set(changed) <= seen


def test_bdx29_expired_paging_link_raises_typed_error(ehr: SandboxServer, backend: BackendClient) -> None:
    client = _client(ehr, backend, [])
    ehr.admin.settings(page_link_ttl_s=0.3)
    pages = client.search_pages("Observation", {"_count": "5"})
    first = next(pages)
    assert first.next_url is not None
    time.sleep(0.5)
    with pytest.raises(SearchLinkExpiredError) as info:
        next(pages)
    assert info.value.status in (404, 410)


def test_bdx29_a_few_empty_pages_with_next_links_are_followed(ehr: SandboxServer, backend: BackendClient) -> None:
    client = _client(ehr, backend, [])
    params = {"patient": ehr.admin.patients()[0], "_count": "5"}
    clean = _ids(client, "Observation", params)
    ehr.admin.set_fault("search_empty_page", path="/fhir/Observation", times=MAX_EMPTY_PAGES)
    pages = list(client.search_pages("Observation", params))
    assert [p.resources for p in pages[:MAX_EMPTY_PAGES]] == [[]] * MAX_EMPTY_PAGES
    assert [r["id"] for p in pages for r in p.resources] == clean


def test_bdx29_a_long_run_of_empty_pages_from_post_filtering_is_followed(
    ehr: SandboxServer, backend: BackendClient
) -> None:
    """A server filtering its pages after paging them (Epic's post-filtered parameters, vendors.md; Cerner's
    compartment filtering) sends page after empty page while it pages past rows the filter drops: 40 in a row are
    well within what such a patient's record produces, and must be followed to the data (a bound of 5 failed the
    type on every run, the smaller-page retry only making the run of empty pages longer)."""
    client = _client(ehr, backend, [])
    params = {"patient": ehr.admin.patients()[0], "_count": "5"}
    clean = _ids(client, "Observation", params)
    ehr.admin.set_fault("search_empty_page", path="/fhir/Observation", times=40)
    pages = list(client.search_pages("Observation", params))
    assert [r["id"] for p in pages for r in p.resources] == clean and len(pages) > 40


def test_bdx29_endless_empty_pages_with_changing_next_links_stop_typed(
    ehr: SandboxServer, backend: BackendClient
) -> None:
    """Each empty page's next link is new, so no link repeats: the bound on empty pages in a row ends the search
    (the fault runs out after 200 pages, where the client before the bound went on to the data as if whole)."""
    client = _client(ehr, backend, [])
    ehr.admin.set_fault("search_empty_page", path="/fhir/Observation", times=200)
    pages = []
    with pytest.raises(SearchIncompleteError) as info:
        for page in client.search_pages("Observation", {"_count": "5"}):
            pages.append(page)
    assert info.value.reason == "empty_pages" and info.value.received == 0
    assert len(pages) == MAX_EMPTY_PAGES + 1 and len({p.next_url for p in pages}) == len(pages)
    assert "paging stalls" in str(info.value)


@pytest.mark.parametrize("retry_after", ["1", "", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_bdx32_429_is_waited_out(ehr: SandboxServer, backend: BackendClient, retry_after: str) -> None:
    sleeps: list[float] = []
    client = _client(ehr, backend, sleeps)
    ehr.admin.set_fault("429", path="/fhir/Patient", times=2, retry_after=retry_after)
    assert sorted(_ids(client, "Patient", {"_count": "1000"})) == sorted(ehr.admin.patients())
    assert len(sleeps) == 2
    if retry_after == "1":
        assert sleeps == [2.0, 2.0]  # clamped to the 2 s floor
    else:  # missing or past date: exponential backoff 2 s then 4 s, ±20 %
        assert 1.6 <= sleeps[0] <= 2.4 and 3.2 <= sleeps[1] <= 4.8


def test_bdx32_persistent_503_raises_rate_limited(ehr: SandboxServer, backend: BackendClient) -> None:
    client = _client(ehr, backend, [], max_attempts=3)
    ehr.admin.set_fault("503", path="/fhir/Patient", times=3, retry_after="5")
    with pytest.raises(RateLimitedError) as info:
        client.read("Patient", ehr.admin.patients()[0])
    assert info.value.status == 503 and info.value.retry_after == 5.0


def test_dropped_connection_and_500_are_retried(ehr: SandboxServer, backend: BackendClient) -> None:
    sleeps: list[float] = []
    client = _client(ehr, backend, sleeps)
    patient = ehr.admin.patients()[0]
    ehr.admin.set_fault("drop", path="/fhir/Patient", times=1)
    ehr.admin.set_fault("500", path="/fhir/Patient", times=1)
    assert client.read("Patient", patient)["id"] == patient
    assert len(sleeps) == 2


def test_expired_token_is_refreshed_once(ehr: SandboxServer, backend: BackendClient) -> None:
    client = _client(ehr, backend, [])
    minted_before = backend.minted
    ehr.admin.set_fault("expired_token", path="/fhir/Observation", times=1)
    assert _ids(client, "Observation", {"_count": "1000", "patient": ehr.admin.patients()[0]})
    assert backend.minted == minted_before + 1


def test_capabilities_declare_last_updated(ehr: SandboxServer, backend: BackendClient) -> None:
    from connectors.providers import get_provider

    caps = _client(ehr, backend, []).capabilities()
    assert caps["fhirVersion"].startswith("4.0")
    assert get_provider("generic").supports_last_updated("Observation", caps)


def test_sal38_no_token_in_logs_or_errors(
    ehr: SandboxServer, backend: BackendClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A run with a refresh, retries and an error never writes a token into a log record or message."""
    tokens = StaticTokenSource(backend.mint(), refresher=backend.mint)
    client = FhirClient(ehr.fhir_base, tokens, retry=recording_policy([], max_attempts=2))
    ehr.admin.set_fault("expired_token", path="/fhir/Patient", times=1)
    ehr.admin.set_fault("429", path="/fhir/Patient", times=1, retry_after="1")
    ehr.admin.set_fault("503", path="/fhir/Observation", times=2)
    with caplog.at_level("DEBUG"):
        assert _ids(client, "Patient", {"_count": "1000"})
        with pytest.raises(RateLimitedError) as info:
            _ids(client, "Observation", {"_count": "10"})
    secrets = set(backend.issued)
    assert len(secrets) == 2  # the rejected token and its replacement
    dumped = " ".join(str(v) for record in caplog.records for v in record.__dict__.values()) + str(info.value)
    assert caplog.records and not any(secret in dumped for secret in secrets)


def test_bdx29_a_next_link_leading_back_to_its_own_page_ends_the_search_typed_without_asking_it_again(
    ehr: SandboxServer, backend: BackendClient
) -> None:
    """``search_repeat_next``: the page a next link reached links to itself. The link is known followed, so the
    search ends there as a loop (``repeated_next``), the page not fetched again to find it brings nothing new."""
    client = _client(ehr, backend, [])
    params = {"patient": ehr.admin.patients()[0], "_count": "5"}
    clean = _ids(client, "Observation", params)
    assert len(clean) > 10, "needs three pages of 5"
    ehr.admin.set_fault("search_repeat_next", path="/fhir/Observation")
    asked: list[str] = []
    with httpx.Client(timeout=30, event_hooks={"request": [lambda r: asked.append(str(r.url))]}) as http:
        tokens = StaticTokenSource(backend.mint(), refresher=backend.mint)
        looping = FhirClient(ehr.fhir_base, tokens, http=http, retry=recording_policy([]))
        pages = []
        with pytest.raises(SearchIncompleteError) as info:
            for page in looping.search_pages("Observation", params):
                pages.append(page)
    assert info.value.reason == "repeated_next" and "paging loops" in str(info.value)
    assert len(pages) == 2 and pages[1].next_url == pages[1].url
    assert len(asked) == 2  # the first page and the one its next link reached, not that one a second time
    assert [r["id"] for p in pages for r in p.resources] == clean[:10]
