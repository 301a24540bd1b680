"""A Bulk manifest listing more files than ehrsync lands from one export (MAX_MANIFEST_FILES) is an invalid manifest
naming the limit, refused before anything is stored or downloaded, and the job is cancelled. Each file costs a
download, two app-database commits, a landing file and ~4 KB while the manifest is stored: a 64 MiB manifest of
tiny files (~1.3 million) needed gigabytes before its first download (docs/PERFORMANCE.md)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from connectors.bulk import BulkClient, BulkManifest, parse_manifest
from connectors.bulk.manifest import MAX_MANIFEST_FILES
from connectors.errors import BulkExportError
from connectors.tokens import MintingTokenSource, StaticTokenSource
from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.helpers import BASE, TOKEN, Script, recording_policy

STATUS = "https://ehr.example.org/bulk/status/job1"


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
        match=rf"lists {MAX_MANIFEST_FILES + 1} files, more than the {MAX_MANIFEST_FILES} ehrsync lands from one "
        r"export \(EHRSYNC_BULK_MAX_FILES\): raise EHRSYNC_BULK_MAX_FILES to land an export this large",
    ) as info:
        parse_manifest(_manifest(MAX_MANIFEST_FILES + 1))
    assert info.value.status == 200  # an invalid manifest, like any other: the job is cancelled


def test_bdx12_a_sandbox_export_of_more_files_than_the_client_lands_is_cancelled(ehr: SandboxServer) -> None:
    """The sandbox writes a file per resource (400-odd here); the client, told to land at most 100 files, refuses the
    manifest naming the limit and cancels the job (its status URL then answers 404). (At most 10 files, the page is
    refused before it is decoded: ``test_bulk_manifest_memory``.)"""
    ehr.admin.settings(bulk_lines_per_file=1)
    backend = BackendClient(ehr)
    policy = recording_policy([], sleep=lambda _s: time.sleep(0.05))
    bulk = BulkClient(ehr.fhir_base, MintingTokenSource(backend.mint_with_expiry), retry=policy, max_manifest_files=100)
    status_url = bulk.kickoff("group", group_id="grp2", types=["Patient", "Observation"])
    with pytest.raises(BulkExportError, match=r"invalid bulk manifest: it lists \d+ files, more than the 100 ehrsync"):
        bulk.wait(status_url, deadline_s=60)
    with pytest.raises(BulkExportError) as info:
        bulk.poll(status_url)
    assert info.value.status == 404


def test_bdx12_a_raised_limit_lands_more_files_than_the_default_on_the_first_page_and_a_later_one() -> None:
    """A client given a limit above the default (EHRSYNC_BULK_MAX_FILES raised for a big health system's export)
    gathers a manifest of more files than the default, on its first page and on a later page alike, and still
    refuses one past its own limit. Before, every page was held to the default 20,000 whatever the client was
    given (the status answer and each later page were parsed with the constant): the limit could only be lowered."""
    over = MAX_MANIFEST_FILES + 5
    first = {**_manifest(over), "link": [{"relation": "next", "url": f"{STATUS}/page/2"}]}
    later = {key: value for key, value in _manifest(over).items() if key != "request"}  # a later page may omit it
    script = Script(httpx.Response(200, json=first), httpx.Response(200, json=later))
    bulk = BulkClient(
        BASE, StaticTokenSource(TOKEN), http=script.client(), retry=recording_policy([]), max_manifest_files=2 * over
    )
    manifest = bulk.check(STATUS)
    assert isinstance(manifest, BulkManifest) and len(manifest.output) + len(manifest.deleted) == 2 * over

    script = Script(httpx.Response(200, json=first), httpx.Response(200, json=later), httpx.Response(202))
    bulk = BulkClient(
        BASE, StaticTokenSource(TOKEN), http=script.client(), retry=recording_policy([]), max_manifest_files=over + 1
    )
    with pytest.raises(BulkExportError, match=rf"lists {2 * over} files, more than the {over + 1} ehrsync"):
        bulk.check(STATUS)
    assert script.requests[-1].method == "DELETE"  # an invalid manifest: the job is cancelled
