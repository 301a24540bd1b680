"""An answer that is neither data nor a redirect ehrsync follows (a 3xx without a Location, 300 Multiple Choices, a
hop past the redirect limit) is an error page like a 4xx/5xx one: read only up to its 1 MiB bound, over a real
socket (the sandbox's ``huge_body`` fault, its endless body answered 300). Downloads (Bulk files, attachments) carry
no byte limit of their own on the answer, so before, such a body was read whole into memory: as long as it lasted,
for a Bulk file as long as it kept above the low-speed limit (24 h)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.bulk import BulkClient
from connectors.errors import BulkExportError, FhirError
from connectors.fhir import FhirClient
from connectors.tokens import StaticTokenSource
from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.helpers import recording_policy
from tests.connectors.scripted import peak_python_bytes

_MIB = 1024 * 1024


def _expect_300(call: object, error: type[Exception]) -> int:
    """The peak of Python memory while ``call`` fails with ``error`` naming HTTP 300."""
    raised: list[Exception] = []

    def run() -> None:
        try:
            call()  # type: ignore[operator]
        except error as exc:
            raised.append(exc)

    peak = peak_python_bytes(run)
    assert raised and "HTTP 300" in str(raised[0]), raised
    return peak


def test_an_attachment_answered_300_with_an_endless_body_is_read_only_to_the_error_bound(
    ehr: SandboxServer, backend: BackendClient, tmp_path: Path
) -> None:
    client = FhirClient(ehr.fhir_base, StaticTokenSource(backend.mint()), retry=recording_policy([]))
    ehr.admin.set_fault("huge_body", path="/fhir/Binary/", body_status=300)
    url = f"{ehr.fhir_base}/Binary/any"
    peak = _expect_300(lambda: client.download(url, tmp_path / "body", 20 * _MIB, "*/*"), FhirError)
    assert peak < 32 * _MIB, peak  # the old code held the whole 256 MiB body
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("requires_token", [True, False])
def test_a_bulk_file_answered_300_with_an_endless_body_is_read_only_to_the_error_bound(
    ehr: SandboxServer, backend: BackendClient, tmp_path: Path, requires_token: bool
) -> None:
    bulk = BulkClient(ehr.fhir_base, StaticTokenSource(backend.mint()), retry=recording_policy([]))
    ehr.admin.set_fault("huge_body", path="/bulk/files/", body_status=300)
    url = f"{ehr.base_url}/bulk/files/any.ndjson"
    peak = _expect_300(lambda: bulk.download(url, tmp_path / "f.ndjson", requires_token), BulkExportError)
    assert peak < 32 * _MIB, peak
