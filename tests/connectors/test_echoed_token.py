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
