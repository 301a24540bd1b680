"""A URL urllib cannot split (an unclosed ``[``) or whose port is no number in 1-65535 raised a bare ValueError from
urllib (or httpx.InvalidURL) wherever one entered: a FHIR base, a server's SMART endpoints (SAL-02, SAL-04), a Bulk
kick-off's Content-Location (BDX-05), a manifest's file ``url`` (BDX-12), a Bundle's ``next`` link (BDX-29), a
redirect's Location. Each now fails as the typed error of its place, naming the field, over a real socket."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import orjson
import pytest

from connectors.bulk import BulkClient
from connectors.errors import (
    BulkExportError,
    ConfigurationError,
    DiscoveryError,
    FhirError,
    OAuthError,
    SecurityPolicyError,
)
from connectors.fhir import FhirClient
from connectors.fhir.client import parse_location
from connectors.http import normalize_base_url, outbound_url_guard, redact_url, resolve_url, same_origin, url_problem
from connectors.smart import (
    PublicClientAuth,
    SecretClientAuth,
    discover,
    introspect_token,
    is_issuer_allowed,
    normalize_issuer,
    refresh_grant,
    revoke_token,
)
from connectors.smart._brand_refs import is_fhir_base
from connectors.tokens import StaticTokenSource
from tests.connectors.helpers import TOKEN, recording_policy
from tests.connectors.scripted import Scripted, send

#: Each makes urllib raise ValueError (split or ``.port``), or names no host, or holds what httpx refuses.
BAD_URLS = [
    "http://[",
    "http://[::1",
    "https://h:99999/x",
    "https://h:abc/x",
    "https://h:-1/x",
    "https:///x",
    "https://h ost/x",
    "https://h/x\x01y",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_url_helpers_name_a_bad_url_and_never_raise_value_error(url: str) -> None:
    assert url_problem(url) is not None
    with pytest.raises(ConfigurationError, match=r"FHIR base URL (is|has|contains)"):
        normalize_base_url(url)
    assert not is_fhir_base(url)
    assert not is_issuer_allowed(url, [url])
    same_origin(url, "https://h/"), same_origin("https://h/", url), normalize_issuer(url)  # no ValueError from any
    redact_url(url), resolve_url(url, "https://h/"), parse_location(url)
    with pytest.raises(SecurityPolicyError, match="refusing to fetch"):
        outbound_url_guard("https://ehr.example/fhir")(url)


def _json(body: object, headers: dict[str, str] | None = None) -> object:
    return send(200, orjson.dumps(body), {"Content-Type": "application/json", **(headers or {})})


_SMART = {
    "token_endpoint": "/token",
    "authorization_endpoint": "/authorize",
    "capabilities": ["launch-standalone"],
    "grant_types_supported": ["authorization_code"],
    "code_challenge_methods_supported": ["S256"],
}


@pytest.mark.parametrize("field", ["token_endpoint", "authorization_endpoint"])
@pytest.mark.parametrize("bad", ["http://[", "https://h:99999/x", "https://h:abc/x"])
def test_sal02_a_bad_endpoint_in_smart_configuration_is_a_discovery_error_naming_it(
    server: tuple[str, Scripted], field: str, bad: str
) -> None:
    base, script = server
    script.actions = [_json({**_SMART, field: bad})]
    with httpx.Client() as http, pytest.raises(DiscoveryError, match=f"smart-configuration field '{field}'"):
        discover(f"{base}/fhir", http=http)


_OPTIONAL = [
    "jwks_uri",
    "revocation_endpoint",
    "introspection_endpoint",
    "registration_endpoint",
    "management_endpoint",
]


@pytest.mark.parametrize("field", _OPTIONAL)
@pytest.mark.parametrize("bad", ["http://[", "https://h:abc/x", "urn:ietf:params:oauth:example"])
def test_sal02_a_bad_optional_endpoint_is_left_out_with_a_warning_and_the_launch_goes_on(
    server: tuple[str, Scripted], field: str, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An optional endpoint ehrsync may never call (registration, management) or can do without (revocation,
    introspection, jwks_uri) stopped every launch when unusable; it is now treated as absent and logged."""
    base, script = server
    script.actions = [_json({**_SMART, field: bad})]
    with httpx.Client() as http:
        config = discover(f"{base}/fhir", http=http)
    assert getattr(config, field) is None
    assert config.token_endpoint == f"{base}/token" and config.authorization_endpoint == f"{base}/authorize"
    assert f"smart-configuration field '{field}'" in caplog.text and "ignoring" in caplog.text


def _capability_statement(uris: list[dict[str, str]]) -> dict[str, object]:
    """A CapabilityStatement whose SMART ``oauth-uris`` extension holds ``uris`` (SAL-04)."""
    security = {"extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                               "extension": uris}]}  # fmt: skip
    return {"resourceType": "CapabilityStatement", "rest": [{"security": security}]}


def test_sal04_a_bad_oauth_uri_in_the_capability_statement_is_a_discovery_error_naming_it(
    server: tuple[str, Scripted],
) -> None:
    base, script = server
    uris = [{"url": "token", "valueUri": "https://h:abc/token"}, {"url": "authorize", "valueUri": "/authorize"}]
    script.actions = [send(404, b""), _json(_capability_statement(uris))]
    with httpx.Client() as http, pytest.raises(DiscoveryError, match="oauth-uris 'token' has a port"):
        discover(f"{base}/fhir", http=http)


def test_sal04_a_bad_optional_oauth_uri_is_left_out_and_the_launch_goes_on(server: tuple[str, Scripted]) -> None:
    base, script = server
    uris = [{"url": "token", "valueUri": "/token"}, {"url": "revoke", "valueUri": "https://h:abc/revoke"}]
    script.actions = [send(404, b""), _json(_capability_statement(uris))]
    with httpx.Client() as http:
        config = discover(f"{base}/fhir", http=http)
    assert config.token_endpoint == f"{base}/token" and config.revocation_endpoint is None


def test_a_bad_fhir_base_is_refused_before_discovery_calls_anything() -> None:
    with httpx.Client() as http, pytest.raises(ConfigurationError, match="FHIR base has a malformed host"):
        discover("http://[", http=http)


@pytest.mark.parametrize("bad", ["http://[::1", "https://h:99999/status"])
def test_bdx05_a_bad_content_location_is_a_bulk_export_error_naming_it(server: tuple[str, Scripted], bad: str) -> None:
    base, script = server
    script.actions = [send(202, b"", {"Content-Location": bad})]
    bulk = BulkClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy([]))
    with pytest.raises(BulkExportError, match=r"bulk kick-off Content-Location (has|is)"):
        bulk.kickoff("system")


def _manifest(base: str, **overrides: object) -> dict[str, object]:
    return {
        "transactionTime": "2026-11-25T09:00:00Z",
        "request": f"{base}/fhir/$export",
        "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": f"{base}/files/1.ndjson"}],
        "error": [],
        **overrides,
    }


@pytest.mark.parametrize("bad", ["http://[", "https://h:99999/f.ndjson", "https://h:abc/f.ndjson"])
def test_bdx12_a_bad_file_url_in_the_manifest_is_an_invalid_manifest(server: tuple[str, Scripted], bad: str) -> None:
    base, script = server
    script.actions = [_json(_manifest(base, output=[{"type": "Patient", "url": bad}]))]
    bulk = BulkClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy([]))
    said = r"output\[0\]\.url must be an http\(s\) URL once resolved against the manifest's URL: it (has|is)"
    with pytest.raises(BulkExportError, match=said):
        bulk.poll(f"{base}/status/1")


def test_a_bad_next_link_of_a_paged_manifest_is_an_invalid_manifest(server: tuple[str, Scripted]) -> None:
    base, script = server
    script.actions = [_json(_manifest(base, link=[{"relation": "next", "url": "http://[::1/page2"}]))]
    bulk = BulkClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy([]))
    with pytest.raises(BulkExportError, match="invalid bulk manifest: its page 1 'next' link has a malformed host"):
        bulk.wait(f"{base}/status/1", cancel_on_abandon=False)


@pytest.mark.parametrize("bad", ["http://[", "https://h:99999/fhir/Patient?page=2", "https://h:abc/fhir/Patient"])
def test_bdx29_a_bad_next_link_is_a_fhir_error_naming_it(server: tuple[str, Scripted], bad: str) -> None:
    base, script = server
    page = {"resourceType": "Bundle", "type": "searchset", "entry": [], "link": [{"relation": "next", "url": bad}]}
    script.actions = [_json(page)]
    client = FhirClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy([]))
    with pytest.raises(FhirError, match=r"Bundle link 'next' (has|is)"):
        list(client.search_pages("Patient"))


def test_a_bad_self_link_is_ignored_as_it_is_never_followed(server: tuple[str, Scripted]) -> None:
    base, script = server
    page = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [],
        "link": [{"relation": "self", "url": "http://["}],
    }
    script.actions = [_json(page)]
    client = FhirClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy([]))
    assert [p.self_url for p in client.search_pages("Patient")] == [None]


#: urllib cannot split the first two; httpx itself refuses the others while it reads the answer (it used to raise
#: httpx.RemoteProtocolError there, retried as a transport failure until "failed after 5 attempt(s)").
BAD_LOCATIONS = ["http://[", "https://h:99999/x", "https://h:abc/x", "http://[::1", "http://[zz]/x"]


@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("bad", BAD_LOCATIONS)
def test_a_bad_redirect_location_is_a_fhir_error_naming_it_at_once(
    server: tuple[str, Scripted], tmp_path: Path, bad: str, status: int
) -> None:
    base, script = server
    script.actions = [send(status, b"", {"Location": bad})] * 6
    sleeps: list[float] = []
    client = FhirClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy(sleeps))
    with pytest.raises(FhirError, match=rf"answered HTTP {status} with a Location that .*{re.escape(bad)!s}") as info:
        client.download(f"{base}/fhir/Binary/1", tmp_path / "body", 1000, "*/*")
    assert info.value.status == status
    assert len(script.seen) == 1 and not sleeps, "an answer that cannot change is never retried"


@pytest.mark.parametrize("bad", ["https://h:abc/x", "http://[zz]/x"])
def test_a_bad_location_on_a_request_that_follows_no_redirect_is_a_fhir_error_at_once(
    server: tuple[str, Scripted], bad: str
) -> None:
    """A search answered 302 (httpx read the Location even when no redirect is followed)."""
    base, script = server
    script.actions = [send(302, b"", {"Location": bad})] * 6
    sleeps: list[float] = []
    client = FhirClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy(sleeps))
    with pytest.raises(FhirError, match=rf"answered HTTP 302 with a Location that .*{re.escape(bad)!s}") as info:
        list(client.search_pages("Patient"))
    assert info.value.status == 302
    assert len(script.seen) == 1 and not sleeps


@pytest.mark.parametrize("bad", ["https://h:abc/f.ndjson", "http://[zz]/f.ndjson"])
def test_bdx18_a_bad_redirect_location_for_a_bulk_file_fails_it_at_once(
    server: tuple[str, Scripted], tmp_path: Path, bad: str
) -> None:
    """A Bulk file URL redirecting (to storage, BDX-18) to a Location no client can request: a BulkExportError
    naming it and the 3xx, after one request."""
    base, script = server
    script.actions = [send(302, b"", {"Location": bad})] * 6
    sleeps: list[float] = []
    bulk = BulkClient(f"{base}/fhir", StaticTokenSource(TOKEN), retry=recording_policy(sleeps))
    with pytest.raises(BulkExportError, match=rf"HTTP 302 with a Location that .*{re.escape(bad)!s}"):
        bulk.download(f"{base}/fhir/files/1.ndjson", tmp_path / "f.ndjson", requires_token=True)
    assert len(script.seen) == 1 and not sleeps


def test_the_location_check_leaves_the_callers_own_requests_alone(server: tuple[str, Scripted], tmp_path: Path) -> None:
    """The check rides on the caller's client (its response hooks) but acts only on what the layers send."""
    base, script = server
    script.actions = [send(302, b"", {"Location": "https://h:abc/x"})] * 2
    with httpx.Client() as http:
        client = FhirClient(f"{base}/fhir", StaticTokenSource(TOKEN), http=http, retry=recording_policy([]))
        with pytest.raises(FhirError, match="answered HTTP 302"):
            client.download(f"{base}/fhir/Binary/1", tmp_path / "body", 1000, "*/*")
        with pytest.raises(httpx.RemoteProtocolError, match="Invalid URL in location header"):
            http.get(f"{base}/elsewhere")  # httpx's own behaviour, as before
    assert len(script.seen) == 2


#: a Location httpx can parse first: a SMART call answered 3xx fares the same whichever it carries
SMART_LOCATIONS = ["https://elsewhere.example/x", "https://h:abc/x", "http://[zz]/x"]


@pytest.mark.parametrize("location", SMART_LOCATIONS)
def test_sal02_smart_discovery_answered_302_is_unusable_whatever_its_location(
    server: tuple[str, Scripted], location: str
) -> None:
    """A Location httpx cannot parse used to fail discovery as a FhirError (the FHIR path's) after one request."""
    base, script = server
    script.actions = [send(302, b"", {"Location": location})] * 6
    with httpx.Client() as http, pytest.raises(DiscoveryError) as info:
        discover(f"{base}/fhir", http=http)
    assert str(info.value) == f"{base}/fhir: smart-configuration HTTP 302 and /metadata HTTP 302"
    assert len(script.seen) == 2  # the well-known document, then the CapabilityStatement; neither retried


_SMART_CALLS = {
    "token": lambda url, http: refresh_grant(url, http=http, client_auth=SecretClientAuth("c", "s"), refresh_token="r"),
    "revocation": lambda url, http: revoke_token(url, http=http, client_auth=SecretClientAuth("c", "s"), token="t"),
    "introspection": lambda url, http: introspect_token(url, http=http, client_auth=PublicClientAuth("c"), token="t"),
}


@pytest.mark.parametrize("location", SMART_LOCATIONS)
@pytest.mark.parametrize("call", _SMART_CALLS.keys())
def test_sal36_an_oauth_call_answered_302_is_an_invalid_response_whatever_its_location(
    server: tuple[str, Scripted], location: str, call: str
) -> None:
    base, script = server
    script.actions = [send(302, b"", {"Location": location})] * 6
    with httpx.Client() as http, pytest.raises(OAuthError) as info:
        _SMART_CALLS[call](f"{base}/oauth", http)
    assert (type(info.value), info.value.error, info.value.status) == (OAuthError, "invalid_response", 302)
    assert str(info.value).endswith("HTTP 302 without an OAuth error body") and len(script.seen) == 1


@pytest.mark.parametrize("bad", ["https://alice:s3cret@h:99999/fhir", "https://alice:s3cret@[::1/fhir?x=1"])
def test_a_bad_url_with_credentials_is_named_without_them(bad: str) -> None:
    """The message quotes the URL, so its user:password must go like its query: before the malformed-URL rule such a
    base was refused as "must not embed credentials" without being quoted."""
    with pytest.raises(ConfigurationError) as info:
        normalize_base_url(bad)
    assert "s3cret" not in str(info.value) and "alice" not in str(info.value)
    assert "s3cret" not in redact_url(bad) and redact_url("https://u:p@h:8443/x?q=1") == "https://h:8443/x"


@pytest.mark.parametrize("bad", ["https://xn--a.example/fhir", "https://[v1.fe]/fhir"])
def test_a_fhir_base_httpx_cannot_send_to_is_refused_naming_it(bad: str) -> None:
    """urllib splits these, but httpx refuses them when it builds the request: an invalid punycode label raised
    idna's UnicodeError (a bare ValueError) at the first call, an IPvFuture literal httpx.InvalidURL."""
    with pytest.raises(ConfigurationError, match="FHIR base URL has a host no request can be sent to"):
        normalize_base_url(bad)
    with httpx.Client() as http, pytest.raises(ConfigurationError, match="FHIR base has a host no request"):
        discover(bad, http=http)
