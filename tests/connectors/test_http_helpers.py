"""Retry-After parsing and clamping (BDX-10, BDX-32), backoff, rate limiter, URL safety (SAL-40)."""

from __future__ import annotations

import threading
from datetime import timedelta

import httpx
import pytest

from connectors.errors import ConfigurationError
from connectors.http import (
    RateLimiter,
    RetryPolicy,
    is_within_base,
    normalize_base_url,
    parse_http_date,
    parse_instant,
    parse_retry_after,
    rate_budget,
    redact_url,
    resolve_url,
    same_origin,
)
from connectors.transport.budget import BudgetTransport
from tests.connectors.helpers import FIXED_NOW, recording_policy


def _http_date(delta_s: float) -> str:
    return (FIXED_NOW + timedelta(seconds=delta_s)).strftime("%a, %d %b %Y %H:%M:%S GMT")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_bdx10_parse_retry_after_delta_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=FIXED_NOW) == expected


def test_bdx10_parse_retry_after_http_date_future_and_past() -> None:
    assert parse_retry_after(_http_date(90), now=FIXED_NOW) == pytest.approx(90.0)
    assert parse_retry_after(_http_date(-90), now=FIXED_NOW) is None


@pytest.mark.parametrize(
    "header",
    [
        "Wed, 21 Oct 99999999999999999999 07:28:00 GMT",  # a year past any C long: OverflowError before
        "Wed, 21 Oct 2015 07:28:00 +9999",  # an offset of 99 h
        "Wed, 32 Oct 2015 07:28:00 GMT",
    ],
)
def test_an_impossible_http_date_is_unusable_never_an_exception(header: str) -> None:
    """A server's Retry-After (or Date) is the server's text: one naming no real moment is unusable like "soon"."""
    assert parse_http_date(header) is None
    assert parse_retry_after(header, now=FIXED_NOW) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("30", 30.0),  # sane value used as is
        ("0", 2.0),  # clamped up to the 2 s floor
        ("1", 2.0),
        ("1200", 900.0),  # clamped down to 15 min
        (_http_date(60), 60.0),  # HTTP-date form
    ],
)
def test_bdx10_delay_for_clamps_to_2s_15min(header: str, expected: float) -> None:
    policy = recording_policy([])
    assert policy.delay_for(0, header) == pytest.approx(expected)


@pytest.mark.parametrize("header", [None, "garbage", "-1", "86400", _http_date(-60)])
def test_bdx10_unusable_retry_after_falls_back_to_backoff(header: str | None) -> None:
    policy = recording_policy([])
    for attempt, base in [(0, 2.0), (1, 4.0), (3, 16.0), (12, 300.0)]:
        delay = policy.delay_for(attempt, header)
        assert base * 0.8 <= delay <= base * 1.2


def test_bdx10_backoff_grows_x2_capped_at_5_min_with_jitter() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert [policy.backoff_delay(n) for n in range(10)] == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    jittered = {recording_policy([], rng=__import__("random").Random(n)).backoff_delay(2) for n in range(20)}
    assert len(jittered) > 1 and all(6.4 <= d <= 9.6 for d in jittered)


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError):
        RetryPolicy(retry_after_min_s=10, retry_after_max_s=5)
    with pytest.raises(ConfigurationError):
        RetryPolicy(jitter=1.5)


def test_http_date_and_instant_parsing() -> None:
    assert parse_http_date("Wed, 25 Nov 2026 10:00:00 GMT") == FIXED_NOW
    assert parse_http_date("not a date") is None
    assert parse_instant("2026-11-25T10:00:00Z") == FIXED_NOW
    assert parse_instant("2026-11-25T12:00:00.000+02:00") == FIXED_NOW
    assert parse_instant("2026-11-25T10:00:00") is None  # no zone: not an instant
    assert parse_instant("2026-11-25") is None
    assert parse_instant(None) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_rate_limiter_token_bucket_per_key() -> None:
    clock = FakeClock()
    limiter = RateLimiter(240, 60.0, clock=clock, sleep=clock.sleep)  # eCW budget: 4 per second
    for _ in range(240):
        assert limiter.acquire("practice-a") == 0.0
    assert limiter.acquire("practice-a") == pytest.approx(0.25)  # bucket empty: wait for one token
    assert limiter.acquire("practice-b") == 0.0  # another practice has its own budget
    clock.now += 60
    assert limiter.acquire("practice-a") == 0.0


def test_rate_limiter_is_thread_safe_no_overspend() -> None:
    clock = FakeClock()
    lock = threading.Lock()
    waits: list[float] = []
    limiter = RateLimiter(50, 10.0, clock=clock, sleep=lambda s: None)

    def worker() -> None:
        for _ in range(20):
            w = limiter.acquire("k")
            with lock:
                waits.append(w)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for w in waits if w == 0.0) == 50  # exactly the bucket's capacity went through free
    assert max(waits) == pytest.approx(50 / 5.0)  # the 100th call waits for 50 refills at 5/s


def test_the_budget_transport_shares_budget_between_fhir_and_token_calls() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 1.0, clock=clock, sleep=clock.sleep)
    inner = httpx.MockTransport(lambda r: httpx.Response(200))
    with rate_budget(limiter, "practice"), httpx.Client(transport=BudgetTransport(inner)) as client:
        client.get("https://ecw.example.org/fhir/r4/P1/Patient")
        client.post("https://ecw.example.org/oauth/token")
        client.get("https://ecw.example.org/fhir/r4/P1/Observation")
    assert clock.sleeps == [pytest.approx(0.5)]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ftp://h/fhir",
        "/fhir",
        "https:///fhir",
        "https://h/fhir?x=1",
        "https://h/fhir#f",
        "http://ehr.example.org/f",
        "https://user:pw@h/fhir",
    ],
)
def test_normalize_base_url_rejects_bad_bases(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        normalize_base_url(bad)


def test_normalize_base_url_accepts_https_and_loopback_http() -> None:
    assert normalize_base_url("https://h.example/fhir/r4/") == "https://h.example/fhir/r4"
    assert normalize_base_url("http://127.0.0.1:8080/fhir") == "http://127.0.0.1:8080/fhir"
    assert normalize_base_url("http://localhost/fhir") == "http://localhost/fhir"
    assert normalize_base_url("http://[::1]:9/fhir") == "http://[::1]:9/fhir"
    assert normalize_base_url("http://sandbox:8000/fhir", allow_http=True) == "http://sandbox:8000/fhir"


@pytest.mark.parametrize(
    ("url", "within"),
    [
        ("https://h.example/fhir/r4/Patient/1", True),
        ("https://h.example:443/fhir/r4?page=2", True),
        ("https://H.EXAMPLE/fhir/r4/Binary/1", True),
        ("https://h.example/fhir/r4-evil/Patient", False),
        ("https://h.example/other/Patient", False),
        ("https://h.example/fhir/r4/../../admin", False),
        ("https://h.example/fhir/r4/%2e%2e/admin", False),
        ("http://h.example/fhir/r4/Patient", False),
        ("https://h.example:8443/fhir/r4/Patient", False),
        ("https://evil.example/fhir/r4/Patient", False),
    ],
)
def test_sal40_is_within_base(url: str, within: bool) -> None:
    assert is_within_base(url, "https://h.example/fhir/r4") is within


def test_same_origin_and_resolve_and_redact() -> None:
    assert same_origin("https://h.example/bulk/x", "https://h.example:443/fhir")
    assert not same_origin("https://cdn.example/x", "https://h.example/fhir")
    assert resolve_url("Observation?page=2", "https://h.example/fhir/Observation?x=1") == (
        "https://h.example/fhir/Observation?page=2"
    )
    assert resolve_url("https://o.example/p", "https://h.example/fhir/") == "https://o.example/p"
    assert redact_url("https://s3.example/f.ndjson?X-Amz-Signature=secret") == "https://s3.example/f.ndjson"


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("https://h.example/cb#access_token=SECRET&state=SECRET", "https://h.example/cb"),
        ("https://h.example/f.ndjson?sig=SECRET#SECRET", "https://h.example/f.ndjson"),
        ("https://[::1/files/f.ndjson?sig=SECRET", "https://[::1/files/f.ndjson"),  # urllib cannot split it
        ("https://[::1/cb#access_token=SECRET", "https://[::1/cb"),
    ],
)
def test_sal38_a_url_is_logged_without_its_query_or_fragment_even_when_urllib_cannot_split_it(
    url: str, logged: str
) -> None:
    """Errors and logs name URLs through ``redact_url``: a signed file URL's query and a fragment (where an
    implicit-flow server puts tokens) go too, also on the fallback path for a URL urllib refuses to split."""
    assert redact_url(url) == logged


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("https://ehr.example/fhir/Binary/12;jsessionid=SECRET", "https://ehr.example/fhir/Binary/12"),
        ("https://ehr.example/fhir;jsessionid=SECRET/Binary/12", "https://ehr.example/fhir/Binary/12"),  # mid-path
        ("https://files.example/export;v=SECRET/1.ndjson;token=SECRET;exp=9", "https://files.example/export/1.ndjson"),
        ("https://u:SECRET@h.example/f.ndjson;jsessionid=SECRET?sig=SECRET#SECRET", "https://h.example/f.ndjson"),
        ("https://h.example/fhir/Binary/a%3Bb;s=SECRET", "https://h.example/fhir/Binary/a%3Bb"),  # %3B is data
        ("https://h.example/a//b/;s=SECRET/c", "https://h.example/a//b//c"),  # empty segments stay: the path's shape
        ("http://[bad/x;s=SECRET?q", "http://[bad/x"),  # urllib cannot split it
        ("https://u:SECRET@[::1/fhir;jsessionid=SECRET/f.ndjson;sig=SECRET#x", "https://[::1/fhir/f.ndjson"),
        ("https://h.example/fhir/Patient/123", "https://h.example/fhir/Patient/123"),
    ],
)
def test_sal38_a_urls_path_parameters_are_not_logged(url: str, logged: str) -> None:
    """RFC 3986 §3.3 path parameters (``;jsessionid=`` of a Java server's URL rewriting, a file host's ``;token=``)
    go from every segment, in both branches; no FHIR id holds a ``;``. Before, they were logged as they were."""
    assert redact_url(url) == logged
