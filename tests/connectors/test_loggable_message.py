"""``loggable_message``: what a log line may say about an error. FHIR and Bulk errors end their message with the
server's OperationOutcome diagnostics, which may echo request values (PHI); the engine logs without them."""

from __future__ import annotations

import httpx
import orjson
import pytest

from connectors.errors import BulkExportError, FhirNotFoundError, TransportError, loggable_message
from connectors.fhir import FhirClient
from connectors.tokens import StaticTokenSource
from tests.connectors.helpers import BASE, TOKEN, Script, recording_policy

SAID = "no Patient named Jane Doe born 1970-01-01"


def test_a_fhir_error_is_logged_without_the_servers_diagnostics() -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-found", "diagnostics": SAID}],
    }
    answer = httpx.Response(404, content=orjson.dumps(outcome), headers={"Content-Type": "application/fhir+json"})
    client = FhirClient(BASE, StaticTokenSource(TOKEN), http=Script(answer).client(), retry=recording_policy([]))
    with pytest.raises(FhirNotFoundError) as info:
        client.read("Patient", "p1")
    assert str(info.value).endswith(f": {SAID}")  # kept in the error (the run's report), not in logs
    assert loggable_message(info.value) == f"GET {BASE}/Patient/p1 answered HTTP 404 (issues: not-found)"


def test_a_bulk_error_is_logged_without_the_servers_diagnostics() -> None:
    error = BulkExportError(f"bulk kick-off answered HTTP 400: {SAID}", status=400, diagnostics=SAID)
    assert loggable_message(error) == "bulk kick-off answered HTTP 400"


@pytest.mark.parametrize(
    "error", [TransportError("timeout calling https://ehr.example/fhir/Patient"), OSError(28, "No space left")]
)
def test_any_other_error_is_logged_as_it_says(error: BaseException) -> None:
    assert loggable_message(error) == str(error)
