"""Every socket read of an ordinary JSON body (a FHIR search, SMART discovery) is cut to what is left of the request
deadline, over a real socket (the sandbox's ``trickle`` fault). Before, the read timeout was cut only when the
attempt began, and the deadline was checked when a piece arrived: a server sending its headers, then a byte just
inside each read timeout, kept the request open up to one such wait past its deadline (here a byte every 5.5 s
against a 6 s deadline: the error came with the byte sent at 11 s, not at 6 s). A Bulk file's body was already
read this way (``network.pieces_within``); the same mechanism now serves every body with a deadline."""

from __future__ import annotations

import time

import pytest

from connectors.errors import RequestDeadlineError
from connectors.fhir import FhirClient
from connectors.smart import discover
from connectors.tokens import StaticTokenSource
from connectors.transport import BodyBounds, BoundedClient
from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.helpers import recording_policy

DEADLINE_S = 6.0
#: a byte every 5.5 s: inside the read timeout (30 s) and inside what is left of the deadline when the attempt
#: begins, so only a read cut to the deadline itself ends the request at 6 s
TRICKLE_S = 5.5
#: the request ends at its deadline (6 s) plus a loaded machine's delays; the old code ended at 11 s at the earliest
WITHIN_S = 10.0


def test_a_fhir_search_whose_body_trickles_ends_at_the_request_deadline(
    ehr: SandboxServer, backend: BackendClient
) -> None:
    """Through a BoundedClient (the Dagster resource's and the auth service's kind of client), read timeout 30 s."""
    tokens = StaticTokenSource(backend.mint(), refresher=backend.mint)
    with BoundedClient(bounds=BodyBounds(None, DEADLINE_S), timeout=30) as http:
        client = FhirClient(ehr.fhir_base, tokens, http=http, retry=recording_policy([]))
        ehr.admin.set_fault("trickle", path="/fhir/Observation", delay_s=TRICKLE_S)
        started = time.monotonic()
        with pytest.raises(RequestDeadlineError) as info:
            list(client.search_pages("Observation", {"_count": "5"}))
        took = time.monotonic() - started
        message = str(info.value)
        assert took < WITHIN_S, f"the request ran {took:.1f} s against its {DEADLINE_S:g} s deadline"
        assert info.value.code == "request_deadline_exceeded"
        assert f"GET {ehr.fhir_base}/Observation was still sending after 6 s (" in message
        assert "bytes received; EHRSYNC_REQUEST_DEADLINE_S)" in message
        assert list(client.search_pages("Observation", {"_count": "5"}))  # the fault fired once


def test_a_smart_configuration_whose_body_trickles_ends_at_the_request_deadline(ehr: SandboxServer) -> None:
    """Discovery's plan-less request (as token and JWKS calls) through a BoundedClient, read timeout 30 s: the
    deadline, not a fall back to ``/metadata`` as if the document were merely unusable."""
    ehr.admin.set_fault("trickle", path="/fhir/.well-known/smart-configuration", delay_s=TRICKLE_S)
    with BoundedClient(bounds=BodyBounds(None, DEADLINE_S), timeout=30) as http:
        started = time.monotonic()
        with pytest.raises(RequestDeadlineError) as info:
            discover(ehr.fhir_base, http=http)
        took = time.monotonic() - started
    assert took < WITHIN_S, f"the request ran {took:.1f} s against its {DEADLINE_S:g} s deadline"
    message = str(info.value)
    assert f"GET {ehr.fhir_base}/.well-known/smart-configuration was still sending after 6 s (" in message
    assert "bytes received; EHRSYNC_REQUEST_DEADLINE_S)" in message
