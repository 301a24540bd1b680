"""A FHIR error answer whose OperationOutcome repeats the request (the sandbox's ``echo`` fault: its diagnostics
quote the request line, the patient and every header, the ``Authorization`` among them) leaves none of it in the
error (SAL-38): its message is a run's failure, shown by Dagster and kept in its event log, and the CLI prints it.
The error names the status and the issue's severity and code, never the diagnostics."""

from __future__ import annotations

import pytest

from connectors.errors import FhirError
from connectors.fhir import FhirClient
from connectors.tokens import MintingTokenSource
from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.helpers import recording_policy


@pytest.mark.parametrize("status", [400, 404])
def test_an_access_token_and_patient_the_ehr_repeats_in_its_diagnostics_are_not_kept(
    ehr: SandboxServer, status: int
) -> None:
    backend = BackendClient(ehr)
    minted: list[str] = []

    def mint() -> tuple[str, float]:
        token, expires_in = backend.mint_with_expiry()
        minted.append(token)
        return token, expires_in

    client = FhirClient(ehr.fhir_base, MintingTokenSource(mint), retry=recording_policy([]))
    ehr.admin.set_fault("echo", path="/fhir/Encounter", body_status=status, echo_as="outcome", error="invalid")
    with pytest.raises(FhirError) as info:
        list(client.search_pages("Encounter", {"patient": "pat0"}))
    error = info.value
    assert minted and len(minted[0]) >= 20
    name = ehr.state.store.read("Patient", "pat0")["name"][0]["family"]
    for kept in (str(error), error.message, repr(error)):
        assert minted[0][:12] not in kept and name not in kept and "authorization" not in kept, kept
    assert str(error).endswith(f"answered HTTP {status} (issues: error invalid)"), str(error)


def test_an_outcome_nested_as_deep_as_json_allows_is_a_typed_error_without_the_token(ehr: SandboxServer) -> None:
    """A read's error answer whose OperationOutcome nests 1,000 levels deep (orjson reads 1,024) is the typed
    FhirError with the outcome, the token taken out of it, never a RecursionError from taking it out."""
    backend = BackendClient(ehr)
    token, _ = backend.mint_with_expiry()
    client = FhirClient(ehr.fhir_base, MintingTokenSource(lambda: (token, 300.0)), retry=recording_policy([]))
    ehr.admin.set_fault("echo", path="/fhir/Encounter", body_status=400, echo_as="outcome_deep", error="invalid")
    with pytest.raises(FhirError) as info:
        list(client.search_pages("Encounter", {"patient": "pat0"}))
    outcome = info.value.operation_outcome
    assert outcome is not None and info.value.status == 400
    said = outcome["issue"][0]["diagnostics"]
    assert "authorization: Bearer [REDACTED]" in said and token[:12] not in said, said
    depth, level = 0, outcome["extension"]
    while level:
        depth, level = depth + 1, level[0]
    assert depth == 999  # the innermost array is empty: kept as the server wrote it
