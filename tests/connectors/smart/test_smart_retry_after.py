"""A 429 or 503 from a SMART/OAuth endpoint keeps the EHR's ``Retry-After`` on the error (``retry_after``), parsed by
the transport's own parser (delta-seconds or an HTTP-date, RFC 9110 §10.2.3); over httpx.MockTransport."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from connectors.errors import OAuthError, TemporarilyUnavailableError, TransportError
from connectors.smart import PublicClientAuth, discover, refresh_grant, revoke_token

TOKEN_URL = "https://ehr.example/oauth2/token"
BASE = "https://ehr.example/fhir/r4"


def _answering(status: int, retry_after: str | None, body: bytes = b"<html>busy</html>") -> httpx.Client:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Client(
        transport=httpx.MockTransport(lambda request: httpx.Response(status, content=body, headers=headers))
    )


def _header(value: str | None) -> str | None:
    """``date:+N``: an HTTP-date N seconds from now (made when the test runs: the test ids stay the same)."""
    if value is None or not value.startswith("date:"):
        return value
    return format_datetime(datetime.now(UTC) + timedelta(seconds=int(value[5:])), usegmt=True)


@pytest.mark.parametrize(
    ("status", "retry_after", "low", "high"),
    [
        (429, "7", 7, 7),
        (503, "30", 30, 30),
        (503, "date:+120", 100, 121),  # an HTTP-date: seconds from now
        (503, None, None, None),
        (503, "soon", None, None),  # unparseable: nothing to pass on
        (503, "date:-120", None, None),  # a date in the past
        (502, "7", None, None),  # Retry-After belongs to 429 and 503 only
        (429, "-5", None, None),  # negative: unusable
        (429, "1e999", None, None),  # infinite: unusable
        (429, "Wed, 21 Oct 99999999999999999999 07:28:00 GMT", None, None),  # no real date: never an OverflowError
    ],
)
def test_a_throttling_token_endpoint_keeps_its_retry_after(
    status: int, retry_after: str | None, low: int | None, high: int | None
) -> None:
    with pytest.raises(TemporarilyUnavailableError) as info:
        refresh_grant(
            TOKEN_URL,
            http=_answering(status, _header(retry_after)),
            client_auth=PublicClientAuth("c"),
            refresh_token="RT",
        )
    waited = info.value.retry_after
    if low is None or high is None:
        assert waited is None
    else:
        assert waited is not None and low <= waited <= high


def test_an_oauth_error_body_with_429_keeps_the_retry_after_too() -> None:
    body = b'{"error": "temporarily_unavailable", "error_description": "slow down"}'
    with pytest.raises(OAuthError) as info:
        revoke_token(TOKEN_URL, http=_answering(429, "12", body), client_auth=PublicClientAuth("c"), token="AT")
    assert info.value.retry_after == 12.0


@pytest.mark.parametrize("status", [429, 503])
def test_a_throttled_or_unavailable_discovery_is_transient_with_the_retry_after(status: int) -> None:
    """Not "no SMART configuration" (no fallback to /metadata on a 429): an outage, with when to come back."""
    with pytest.raises(TransportError) as info:
        discover(BASE, http=_answering(status, "42"))
    assert info.value.retry_after == 42.0 and f"HTTP {status}" in str(info.value)


def test_a_discovery_answered_408_is_an_outage_as_a_token_answer_is() -> None:
    """408 Request Timeout is the server giving up waiting, as the token endpoint's 408 is judged: transient (the
    call is tried again later), not ``discovery_failed`` for a server without a SMART configuration."""
    with pytest.raises(TransportError) as info:
        discover(BASE, http=_answering(408, None))
    assert "HTTP 408" in str(info.value) and info.value.retry_after is None
