"""BulkClient against the real sandbox: a full export lifecycle and its faults (BDX-01..22, SAL-40)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from connectors.bulk import (
    BulkClient,
    BulkStatus,
    download_items,
    iter_deleted_refs,
    verify_ndjson_file,
)
from connectors.errors import BulkExportError, BulkFileExpiredError, BulkFileTruncatedError
from connectors.fhir import FhirClient
from connectors.tokens import MintingTokenSource
from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.helpers import recording_policy

SMALL_GROUP = "grp2"  # the sandbox's five-patient cohort


class Harness:
    """A backend-authorised BulkClient whose waits are short real sleeps, recorded for assertions."""

    def __init__(self, ehr: SandboxServer) -> None:
        self.backend = BackendClient(ehr)
        self.sleeps: list[float] = []
        self.tokens = MintingTokenSource(self.backend.mint_with_expiry)

        def nap(seconds: float) -> None:
            self.sleeps.append(seconds)
            time.sleep(0.05)

        self.bulk = BulkClient(ehr.fhir_base, self.tokens, retry=recording_policy([], sleep=nap))
        self.fhir = FhirClient(ehr.fhir_base, self.tokens)


@pytest.fixture
def harness(ehr: SandboxServer) -> Harness:
    return Harness(ehr)


def test_bdx_full_group_export_lifecycle(harness: Harness, tmp_path: Path) -> None:
    groups = [r["id"] for page in harness.fhir.search_pages("Group") for r in page.resources]
    assert SMALL_GROUP in groups  # BDX-01: groups are discoverable
    status_url = harness.bulk.kickoff("group", group_id=SMALL_GROUP, types=["Patient", "Observation", "Condition"])
    progress: list[BulkStatus] = []
    manifest = harness.bulk.wait(status_url, deadline_s=60, on_progress=progress.append)
    assert manifest.requires_access_token is True
    assert SMALL_GROUP in manifest.request and manifest.transaction_time.tzinfo is not None
    assert {item.type for item in manifest.output} == {"Patient", "Observation", "Condition"}
    outcomes = download_items(harness.bulk, manifest.output, tmp_path, requires_token=True)
    assert all(o.ok for o in outcomes)
    patients = 0
    for outcome in outcomes:
        assert outcome.path is not None
        check = verify_ndjson_file(outcome.path, outcome.item.type, outcome.item.count)
        assert check.ok, check.problems  # BDX-20
        patients += check.lines if outcome.item.type == "Patient" else 0
    assert patients == 5
    harness.bulk.cancel(status_url)  # BDX-11: free the server's storage once landed
    with pytest.raises(BulkExportError) as info:
        harness.bulk.poll(status_url)
    assert info.value.status == 404


def test_bdx04_patient_subset_via_post_and_bdx21_deleted_since(
    harness: Harness, ehr: SandboxServer, tmp_path: Path
) -> None:
    first = harness.bulk.wait(harness.bulk.kickoff("system", types=["Patient"]), deadline_s=60)
    patients = ehr.admin.patients()
    subset = [f"Patient/{patients[0]}", f"Patient/{patients[1]}"]
    manifest = harness.bulk.wait(harness.bulk.kickoff("patient", types=["Patient"], patients=subset), deadline_s=60)
    (item,) = manifest.output
    path = harness.bulk.download(item.url, tmp_path / "subset.ndjson", requires_token=True)
    assert verify_ndjson_file(path, "Patient", 2).ok

    deleted = ehr.admin.mutate(delete=2, seed=3)["deleted"]
    types = sorted({ref.split("/")[0] for ref in deleted})
    since = harness.bulk.wait(harness.bulk.kickoff("system", types=types, since=first.transaction_time), deadline_s=60)
    tombstones = set()
    for index, item in enumerate(since.deleted):
        file = harness.bulk.download(item.url, tmp_path / f"deleted-{index}.ndjson", requires_token=True)
        tombstones |= {f"{ref.resource_type}/{ref.id}" for ref in iter_deleted_refs(file, since.transaction_time)}
    assert set(deleted) <= tombstones


def test_bdx16_files_without_token_when_not_required(harness: Harness, ehr: SandboxServer, tmp_path: Path) -> None:
    ehr.admin.settings(requires_access_token=False)
    manifest = harness.bulk.wait(harness.bulk.kickoff("group", group_id=SMALL_GROUP, types=["Patient"]), deadline_s=60)
    assert manifest.requires_access_token is False
    (item,) = manifest.output
    path = harness.bulk.download(item.url, tmp_path / "p.ndjson", requires_token=manifest.requires_access_token)
    assert verify_ndjson_file(path, "Patient", item.count).ok


def test_bdx19_expired_file_and_bdx20_bad_files(harness: Harness, ehr: SandboxServer, tmp_path: Path) -> None:
    manifest = harness.bulk.wait(harness.bulk.kickoff("group", group_id=SMALL_GROUP, types=["Patient"]), deadline_s=60)
    (item,) = manifest.output
    ehr.admin.set_fault("bulk_410", path="/bulk/files/", times=1)
    with pytest.raises(BulkFileExpiredError) as info:
        harness.bulk.download(item.url, tmp_path / "gone.ndjson", requires_token=True)
    assert info.value.status == 410 and not (tmp_path / "gone.ndjson").exists()

    ehr.admin.set_fault("bulk_mixed_type", path="/bulk/files/", times=1)
    mixed = harness.bulk.download(item.url, tmp_path / "mixed.ndjson", requires_token=True)
    check = verify_ndjson_file(mixed, "Patient", item.count)
    assert not check.ok and check.wrong_type == 1

    # BDX-20 / issue 10: a file cut mid-line is fetched again, not kept (its last line would be quarantined)
    ehr.admin.set_fault("bulk_truncated", path="/bulk/files/", times=1)
    refetched = harness.bulk.download(item.url, tmp_path / "cut.ndjson", requires_token=True)
    assert verify_ndjson_file(refetched, "Patient", item.count).ok

    ehr.admin.set_fault("bulk_truncated", path="/bulk/files/", times=None)
    with pytest.raises(BulkFileTruncatedError, match="truncated on each of 3 attempts"):
        harness.bulk.download(item.url, tmp_path / "cut-again.ndjson", requires_token=True)
    assert not (tmp_path / "cut-again.ndjson").exists()
    ehr.admin.clear_faults()


def test_bdx07_kickoff_429_honours_retry_after(harness: Harness, ehr: SandboxServer) -> None:
    # the running job takes ~10 s (2 s for each of 5 patients): 2.5 s was outlasted by the retried kick-offs on a
    # loaded machine, and a retry that then got in raised nothing
    ehr.admin.settings(bulk_max_jobs_per_client=1, bulk_throttle_s=2.0, bulk_retry_after_s=1)
    running = harness.bulk.kickoff("group", group_id=SMALL_GROUP, types=["Patient"])
    try:
        with pytest.raises(BulkExportError) as info:
            harness.bulk.kickoff("group", group_id=SMALL_GROUP, types=["Patient"])
        assert info.value.status == 429
        assert harness.sleeps == [2.0] * 4  # Retry-After 1 clamped to the 2 s floor, retried
    finally:
        harness.bulk.cancel(running)


def test_bdx09_in_progress_then_done_and_401_refresh(harness: Harness, ehr: SandboxServer) -> None:
    ehr.admin.settings(bulk_throttle_s=0.6)  # ~3 s for 5 patients (0.25 s was outlasted before the first poll)
    status_url = harness.bulk.kickoff("group", group_id=SMALL_GROUP, types=["Patient", "Observation"])
    first = harness.bulk.poll(status_url)
    assert not first.done and first.retry_after is not None
    minted = harness.backend.minted
    assert minted == 1  # one backend token served kick-off and polling
    ehr.admin.set_fault("expired_token", path="/bulk/status/", times=1)
    manifest = harness.bulk.wait(status_url, deadline_s=60)
    assert manifest.output and harness.backend.minted == minted + 1
    harness.bulk.cancel(status_url)


def test_bdx09_a_status_503_with_retry_after_is_a_throttle_waited_as_asked_however_often(
    harness: Harness, ehr: SandboxServer
) -> None:
    """BDX-09/10: a status poll answered 503 with Retry-After is the server asking for time, as a 429 is: each is
    waited at least as asked (7 s), six in a row do not end the wait, and the export completes. Taken for a
    transient hiccup instead, its Retry-After was ignored for backoff and the fifth failed the run."""
    status_url = harness.bulk.kickoff("group", group_id=SMALL_GROUP, types=["Patient"])
    ehr.admin.set_fault("503", path="/bulk/status/", times=6, retry_after="7")
    manifest = harness.bulk.wait(status_url, deadline_s=3600)
    assert manifest.output
    assert len(harness.sleeps) >= 6 and all(s >= 7.0 for s in harness.sleeps[:6]), harness.sleeps
    harness.bulk.cancel(status_url)


def test_bdx10_deadline_cancels_a_slow_job(harness: Harness, ehr: SandboxServer) -> None:
    ehr.admin.settings(bulk_throttle_s=1.0)
    status_url = harness.bulk.kickoff("group", group_id=SMALL_GROUP, types=["Patient"])
    with pytest.raises(BulkExportError, match="cancelled"):
        harness.bulk.wait(status_url, deadline_s=1)
    with pytest.raises(BulkExportError) as info:
        harness.bulk.poll(status_url)
    assert info.value.status == 404
