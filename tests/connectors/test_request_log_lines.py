"""httpx's per-request lines (``ehrsync -v``) for requests sent through the EHR layers: one per request on the wire,
and none dropped that another client sent meanwhile. Over a real socket (the scripted server)."""

from __future__ import annotations

import logging

import httpx
import orjson
import pytest

from connectors.fhir import FhirClient
from connectors.tokens import StaticTokenSource
from connectors.transport import ehr_client
from connectors.transport.request_lines import QuerylessRequestLines
from tests.connectors.helpers import recording_policy
from tests.connectors.scripted import scripted_server, send

_PATIENT = orjson.dumps({"resourceType": "Patient", "id": "p1"})
_JSON = {"Content-Type": "application/fhir+json"}


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "httpx"]


def test_a_request_another_client_sends_during_an_ehr_request_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A token source's refresher (a caller's code, here with an httpx client of its own) runs inside the EHR
    request's auth flow, after its 401. Its request is one on the wire like the others: its line is kept, and the
    two requests to the same URL (the refused one and the one sent again) get one line each."""
    with scripted_server() as (url, script):
        script.actions += [send(401, b""), send(200, b'{"access_token": "t2"}'), send(200, _PATIENT, _JSON)]

        def refresher() -> str:
            with httpx.Client(timeout=10) as own:  # not a client ehrsync built
                return str(own.post(f"{url}/their-token", data={"grant": "x"}).json()["access_token"])

        tokens = StaticTokenSource("t1", refresher=refresher)
        client = FhirClient(f"{url}/fhir", tokens, retry=recording_policy([]))
        try:
            with caplog.at_level(logging.INFO, logger="httpx"):
                assert client.read("Patient", "p1")["id"] == "p1"
        finally:
            client.close()
    assert _lines(caplog) == [
        f'HTTP Request: GET {url}/fhir/Patient/p1 "HTTP/1.1 401 Unauthorized"',
        f'HTTP Request: POST {url}/their-token "HTTP/1.1 200 OK"',
        f'HTTP Request: GET {url}/fhir/Patient/p1 "HTTP/1.1 200 OK"',
    ]


def test_a_followed_redirect_logs_each_hop_once(caplog: pytest.LogCaptureFixture) -> None:
    """The layers' client follows a redirect (the caller's client asks it to): two requests on the wire, two lines."""
    with scripted_server() as (url, script):
        script.actions += [send(302, b"", {"Location": f"{url}/store/b1"}), send(200, b"bytes")]
        with httpx.Client(timeout=10, follow_redirects=True) as http, caplog.at_level(logging.INFO, logger="httpx"):
            assert ehr_client(http).get(f"{url}/fhir/Binary/b1").content == b"bytes"
    assert _lines(caplog) == [
        f'HTTP Request: GET {url}/fhir/Binary/b1 "HTTP/1.1 302 Found"',
        f'HTTP Request: GET {url}/store/b1 "HTTP/1.1 200 OK"',
    ]


def test_request_lines_of_the_ehr_layers_keep_no_query_in_any_process(caplog: pytest.LogCaptureFixture) -> None:
    """A Dagster run, the auth service or a host app that turns httpx's INFO on (no ``ehrsync -v``, which installs
    the filter for the CLI) logged each request's whole URL: search values and a pre-signed file link's signature.
    An ``EhrClient`` puts the filter on the ``httpx`` logger itself."""
    httpx_logger = logging.getLogger("httpx")
    kept = list(httpx_logger.filters)
    httpx_logger.filters = [f for f in kept if not isinstance(f, QuerylessRequestLines)]  # as a fresh process
    try:
        with scripted_server() as (url, script):
            script.actions += [send(200, b"bytes")]
            with httpx.Client(timeout=10) as http, caplog.at_level(logging.INFO, logger="httpx"):
                signed = f"{url}/store/b1?X-Amz-Signature=s3cr3t&patient=p-123"
                assert ehr_client(http).get(signed).content == b"bytes"
    finally:
        httpx_logger.filters = kept + [f for f in httpx_logger.filters if f not in kept]
    assert _lines(caplog) == [f'HTTP Request: GET {url}/store/b1 "HTTP/1.1 200 OK"']
