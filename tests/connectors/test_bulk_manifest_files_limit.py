"""A Bulk manifest listing more files than ehrsync lands from one export (MAX_MANIFEST_FILES) is an invalid manifest
naming the limit, refused before anything is stored or downloaded, and the job is cancelled. Each file costs a
download, two app-database commits, a landing file and ~4 KB while the manifest is stored: a 64 MiB manifest of
tiny files (~1.3 million) needed gigabytes before its first download (docs/PERFORMANCE.md)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from connectors.bulk import BulkClient, parse_manifest
from connectors.bulk.manifest import MAX_MANIFEST_FILES
from connectors.errors import BulkExportError
from connectors.tokens import MintingTokenSource
from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.helpers import recording_policy


def _manifest(files: int) -> dict[str, Any]:
    items = [{"type": "Observation", "url": f"https://files.example.org/{n}.ndjson"} for n in range(files)]
    return {
        "transactionTime": "2024-01-01T00:00:00Z",
        "request": "https://ehr.example/fhir/$export",
        "requiresAccessToken": True,
        "output": items[:-1],
        "error": [],
        "deleted": items[-1:],
    }


def test_bdx12_a_manifest_of_more_files_than_the_limit_is_invalid_naming_it() -> None:
    """Every list counts (``output``, ``error``, ``deleted``); at the limit it is accepted."""
    assert len(parse_manifest(_manifest(MAX_MANIFEST_FILES)).output) == MAX_MANIFEST_FILES - 1
    with pytest.raises(
        BulkExportError,
        match=rf"lists {MAX_MANIFEST_FILES + 1} files, more than the "
        rf"{MAX_MANIFEST_FILES} ehrsync lands from one export \(MAX_MANIFEST_FILES\)",
    ) as info:
        parse_manifest(_manifest(MAX_MANIFEST_FILES + 1))
    assert info.value.status == 200  # an invalid manifest, like any other: the job is cancelled


def test_bdx12_a_sandbox_export_of_more_files_than_the_client_lands_is_cancelled(ehr: SandboxServer) -> None:
    """The sandbox writes a file per resource; the client, told to land at most 10 files, refuses the manifest
    naming the limit and cancels the job (its status URL then answers 404)."""
    ehr.admin.settings(bulk_lines_per_file=1)
    backend = BackendClient(ehr)
    policy = recording_policy([], sleep=lambda _s: time.sleep(0.05))
    bulk = BulkClient(ehr.fhir_base, MintingTokenSource(backend.mint_with_expiry), retry=policy, max_manifest_files=10)
    status_url = bulk.kickoff("group", group_id="grp2", types=["Patient", "Observation"])
    with pytest.raises(BulkExportError, match=r"invalid bulk manifest: it lists \d+ files, more than the 10 ehrsync"):
        bulk.wait(status_url, deadline_s=60)
    with pytest.raises(BulkExportError) as info:
        bulk.poll(status_url)
    assert info.value.status == 404
