"""URLs named by a resource (attachments) cannot point ehrsync's workers at internal services (SSRF)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from connectors.errors import SecurityPolicyError
from connectors.fhir import FhirClient
from connectors.http import outbound_url_guard
from connectors.tokens import StaticTokenSource

BASE = "http://127.0.0.1:8081/fhir"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8081/fhir/Binary/b1",  # the FHIR server itself (even on loopback, as the sandbox is)
        "http://127.0.0.1:8081/files/b1.pdf",  # same origin, other path
        "https://93.184.216.34/signed/b1.pdf",  # another host, https, public address
    ],
)
def test_allowed_targets(url: str) -> None:
    outbound_url_guard(BASE)(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/b1.pdf",  # off-origin plain http
        "https://127.0.0.1:5432/",  # loopback service on another port
        "https://169.254.169.254/latest/meta-data/",  # cloud metadata
        "https://10.0.0.7/internal",  # private network
        "https://[::1]:9000/x",
        "ftp://93.184.216.34/x",
    ],
)
def test_refused_targets(url: str) -> None:
    with pytest.raises(SecurityPolicyError, match="refusing to fetch"):
        outbound_url_guard(BASE)(url)


def test_download_checks_redirect_targets_before_following(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "https://169.254.169.254/latest/meta-data/"})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = FhirClient(BASE, StaticTokenSource("t"), http=http)
    with pytest.raises(SecurityPolicyError):
        client.download(
            "Binary/b1", tmp_path / "body", max_bytes=1000, accept="*/*", url_guard=outbound_url_guard(BASE)
        )
    assert seen == [f"{BASE}/Binary/b1"], "the internal address must never be requested"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://files.clinic.local/export/p.ndjson", True),  # named host, any port, plain http
        ("https://10.0.0.5:8443/f.ndjson", True),  # host:port entry
        ("https://10.0.0.5:9000/f.ndjson", False),  # same address, another port: not named
        ("https://169.254.169.254/latest/meta-data/", False),  # everything else keeps the public-https rule
        ("ftp://files.clinic.local/x", False),
    ],
)
def test_operator_allowed_hosts(url: str, allowed: bool) -> None:
    """An on-premises file server an operator names may be private or plain http; nothing else loosens."""
    guard = outbound_url_guard(BASE, allowed_hosts=["files.clinic.local", " 10.0.0.5:8443 "])
    if allowed:
        guard(url)
    else:
        with pytest.raises(SecurityPolicyError):
            guard(url)


def test_bad_ports_and_ipv6_entries_are_handled_as_policy_not_crashes() -> None:
    guard = outbound_url_guard(BASE, allowed_hosts=["files.clinic.local", "[fd00::1]:8443"])
    with pytest.raises(SecurityPolicyError, match="port"):
        guard("http://files.clinic.local:99999/f.ndjson")  # a server-named URL must not crash the export
    guard("http://[fd00::1]:8443/f.ndjson")
    with pytest.raises(SecurityPolicyError):
        guard("http://[fd00::1]:9000/f.ndjson")  # the entry names one port
