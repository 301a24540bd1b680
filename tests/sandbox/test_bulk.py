"""Bulk Data $export: kick-off levels, polling, manifest, files, deleted, limits, cancel, expiry (BDX-01..25)."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from sandbox import SandboxConfig, SandboxServer
from tests.sandbox.helpers import backend_token, bearer, kickoff, lines, patient_login, run, wait


@pytest.fixture(scope="module")
def token(sandbox_session: SandboxServer) -> str:
    return backend_token(sandbox_session)


def test_bdx06_bdx12_system_export_lifecycle(sandbox: SandboxServer, token: str) -> None:
    """Kick-off to manifest; the completed status answer carries a future ``Expires`` (BDX-13)."""
    resp = kickoff(sandbox, token, _type="Patient,Condition,Practitioner")
    assert resp.status_code == 202
    status_url = resp.headers["content-location"]
    assert status_url.startswith(sandbox.base_url + "/bulk/status/")
    done = wait(status_url, token)
    assert parsedate_to_datetime(done.headers["expires"]).timestamp() > time.time()
    manifest = done.json()
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"].startswith(sandbox.fhir_base + "/$export")
    assert "deleted" not in manifest  # no _since
    by_type = {o["type"]: o for o in manifest["output"]}
    assert set(by_type) == {"Patient", "Condition", "Practitioner"}
    patients = lines(by_type["Patient"]["url"], token)
    assert len(patients) == by_type["Patient"]["count"] == 25
    assert all(p["resourceType"] == "Patient" for p in patients)


def test_bdx01_patient_and_group_levels_and_group_membership(sandbox: SandboxServer, token: str) -> None:
    manifest = run(sandbox, token, path="/Patient/$export")
    types = {o["type"] for o in manifest["output"]}
    assert {"Patient", "Observation", "DocumentReference"} <= types
    assert not types & {"Practitioner", "Organization", "Binary", "Group"}  # compartment types by default
    group = run(sandbox, token, path="/Group/grp1/$export", _type="Patient")
    ids = {p["id"] for p in lines(group["output"][0]["url"], token)}
    assert ids == {f"pat{i}" for i in range(0, 25, 2)}
    assert kickoff(sandbox, token, path="/Group/grp99/$export").status_code == 404


def test_bdx04_post_parameters_with_patient(sandbox: SandboxServer, token: str) -> None:
    body: dict[str, Any] = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Patient,Encounter"},
            {"name": "patient", "valueReference": {"reference": "Patient/pat4"}},
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
        ],
    }
    manifest = run(sandbox, token, path="/Group/grp1/$export", method="POST", body=body)
    encounters = lines(next(o["url"] for o in manifest["output"] if o["type"] == "Encounter"), token)
    assert encounters and {e["subject"]["reference"] for e in encounters} == {"Patient/pat4"}
    body["parameter"][1] = {"name": "patient", "valueReference": {"reference": "Patient/pat3"}}
    assert kickoff(sandbox, token, path="/Group/grp1/$export", method="POST", body=body).status_code == 400
    assert kickoff(sandbox, token, path="/$export", method="POST", body=body).status_code == 400


def test_bdx02_respond_async_strict_and_lenient(sandbox: SandboxServer, token: str) -> None:
    resp = kickoff(sandbox, token, headers={}, _type="Patient")
    assert resp.status_code == 400 and resp.json()["resourceType"] == "OperationOutcome"
    sandbox.admin.settings(strict_respond_async=False)
    assert kickoff(sandbox, token, headers={}, _type="Patient").status_code == 202


def test_bdx03_output_formats(sandbox: SandboxServer, token: str) -> None:
    for fmt in ("application/fhir+ndjson", "application/ndjson", "ndjson"):
        assert run(sandbox, token, _type="Group", _outputFormat=fmt)["output"][0]["count"] == 3
    assert kickoff(sandbox, token, _outputFormat="text/csv").status_code == 400


def test_bdx05_unsupported_parameters_400_unless_lenient(sandbox: SandboxServer, token: str) -> None:
    resp = kickoff(sandbox, token, _type="Patient", includeAssociatedData="LatestProvenanceResources")
    assert resp.status_code == 400 and resp.json()["issue"][0]["code"] == "not-supported"
    lenient = {"Prefer": "respond-async, handling=lenient"}
    manifest = run(sandbox, token, headers=lenient, _type="Patient", _until="2026-01-01T00:00:00Z")
    errors = lines(manifest["error"][0]["url"], token)
    assert errors[0]["resourceType"] == "OperationOutcome" and errors[0]["issue"][0]["severity"] == "warning"
    assert manifest["output"][0]["count"] == 25


def test_bdx03_type_filter_and_elements(sandbox: SandboxServer, token: str) -> None:
    manifest = run(
        sandbox, token, _type="Observation", _typeFilter="Observation?category=laboratory", _elements="id,category"
    )
    obs = lines(manifest["output"][0]["url"], token)
    assert obs and {o["category"][0]["coding"][0]["code"] for o in obs} == {"laboratory"}
    assert set(obs[0]) == {"resourceType", "id", "meta", "category"}
    assert kickoff(sandbox, token, _typeFilter="Observation?_include=x").status_code == 400


def test_bdx21_since_gives_changes_and_deleted_bundles() -> None:
    """Each ``deleted`` Bundle is dated by its deletion (``meta.lastUpdated``, after ``_since`` and not after the
    export's ``transactionTime``): a client dates its tombstone from it, the transaction time only when it is absent."""
    with SandboxServer(SandboxConfig(patients=5, seed=9)) as sb:
        token = backend_token(sb)
        before = time.time()
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(before - 1))
        changed = sb.admin.mutate(create=2, update=2, delete=2, seed=3)
        manifest = run(sb, token, _since=since)
        exported = {f"{r['resourceType']}/{r['id']}" for o in manifest["output"] for r in lines(o["url"], token)}
        assert exported == set(changed["created"]) | set(changed["updated"])
        deleted = [b for d in manifest["deleted"] for b in lines(d["url"], token)]
        assert {b["entry"][0]["request"]["url"] for b in deleted} == set(changed["deleted"])
        assert all(b["type"] == "transaction" and b["entry"][0]["request"]["method"] == "DELETE" for b in deleted)
        assert manifest["transactionTime"] >= since
        assert all(since < b["meta"]["lastUpdated"] <= manifest["transactionTime"] for b in deleted), deleted


def test_bdx13_several_files_per_type_and_count_flag() -> None:
    with SandboxServer(SandboxConfig(patients=3, seed=2, bulk_lines_per_file=40)) as sb:
        token = backend_token(sb)
        manifest = run(sb, token, _type="Observation")
        files = manifest["output"]
        assert len(files) > 2 and all(o["type"] == "Observation" for o in files)
        assert [o["count"] for o in files[:-1]] == [40] * (len(files) - 1)
        assert sum(len(lines(o["url"], token)) for o in files) == sum(o["count"] for o in files)
        sb.admin.settings(bulk_omit_count=True)
        assert "count" not in run(sb, token, _type="Patient")["output"][0]


def test_bdx16_requires_access_token_toggle(sandbox: SandboxServer, token: str) -> None:
    url = run(sandbox, token, _type="Patient")["output"][0]["url"]
    assert httpx.get(url).status_code == 401
    sandbox.admin.settings(requires_access_token=False)
    manifest = run(sandbox, token, _type="Patient")
    assert manifest["requiresAccessToken"] is False
    assert len(lines(manifest["output"][0]["url"], None)) == 25


def test_bdx07_concurrent_job_limit_429(sandbox: SandboxServer) -> None:
    """The first job runs ~12 s (0.5 s a patient; 0.05 gave 1.25 s, which a loaded machine's next two requests
    outlasted): the second kick-off and the poll find it running."""
    sandbox.admin.settings(bulk_max_jobs_per_client=1, bulk_throttle_s=0.5)
    token = backend_token(sandbox)
    first = kickoff(sandbox, token, _type="Patient")
    assert first.status_code == 202
    try:
        second = kickoff(sandbox, token, _type="Patient")
        assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
        progress = httpx.get(first.headers["content-location"], headers=bearer(token))
        assert progress.status_code == 202 and progress.headers["x-progress"]
    finally:
        httpx.delete(first.headers["content-location"], headers=bearer(token))


def test_bdx11_cancel_then_404(sandbox: SandboxServer, token: str) -> None:
    status_url = kickoff(sandbox, token, _type="Patient").headers["content-location"]
    assert httpx.delete(status_url, headers=bearer(token)).status_code == 202
    gone = httpx.get(status_url, headers=bearer(token))
    assert gone.status_code == 404 and gone.json()["resourceType"] == "OperationOutcome"


def test_bdx19_files_expire_with_410_or_404(sandbox: SandboxServer, token: str) -> None:
    url = run(sandbox, token, _type="Patient")["output"][0]["url"]
    sandbox.admin.settings(clock_shift_s=601, bulk_file_ttl_s=60)
    assert httpx.get(url, headers=bearer(token)).status_code == 410
    sandbox.admin.settings(bulk_expired_status=404)
    assert httpx.get(url, headers=bearer(token)).status_code == 404


def test_bdx25_export_needs_system_scopes(sandbox: SandboxServer) -> None:
    _, patient = patient_login(sandbox)
    assert kickoff(sandbox, patient["access_token"], _type="Patient").status_code == 403
    narrow = backend_token(sandbox, "system/Patient.rs")
    assert kickoff(sandbox, narrow, _type="Condition").status_code == 403
    manifest = run(sandbox, narrow)
    assert {o["type"] for o in manifest["output"]} == {"Patient"}
    other = backend_token(sandbox)
    status_url = kickoff(sandbox, narrow, _type="Patient").headers["content-location"]
    assert httpx.get(status_url, headers=bearer(other)).status_code == 403


def test_bdx17_gzip_download_when_enabled(sandbox: SandboxServer, token: str) -> None:
    url = run(sandbox, token, _type="Patient")["output"][0]["url"]
    plain = httpx.get(url, headers={**bearer(token), "Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    sandbox.admin.settings(bulk_gzip=True)
    packed = httpx.get(url, headers={**bearer(token), "Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.content == plain.content  # httpx decodes transparently


@pytest.mark.parametrize("value", ["", "0", "86400", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_bdx10_status_retry_after_faults(sandbox: SandboxServer, token: str, value: str) -> None:
    sandbox.admin.settings(bulk_status_retry_after=value, bulk_throttle_s=0.5)  # running ~12 s: polled while running
    status_url = kickoff(sandbox, token, _type="Patient").headers["content-location"]
    try:
        resp = httpx.get(status_url, headers=bearer(token))
        assert resp.status_code == 202
        assert resp.headers.get("retry-after") == (value or None)
    finally:
        httpx.delete(status_url, headers=bearer(token))


def test_bulk_error_file_fault_fails_one_type_with_a_fatal_outcome(sandbox: SandboxServer, token: str) -> None:
    """Fault ``bulk_error_file`` (issue 10): BDX-13 partial success, the type's output gone, a fatal outcome."""
    sandbox.admin.clear_faults()
    fault = {"kind": "bulk_error_file", "resource_type": "Condition", "path": "/fhir/$export", "times": 1}
    httpx.post(f"{sandbox.base_url}/admin/faults", json=fault).raise_for_status()
    manifest = run(sandbox, token, _type="Patient,Condition")
    assert {o["type"] for o in manifest["output"]} == {"Patient"}
    (error,) = manifest["error"]
    (outcome,) = lines(error["url"], token)
    assert outcome["issue"][0]["severity"] == "fatal" and "Condition" in outcome["issue"][0]["diagnostics"]
    again = run(sandbox, token, _type="Patient,Condition")  # times=1: the next export is whole
    assert {o["type"] for o in again["output"]} == {"Patient", "Condition"} and again["error"] == []


@pytest.mark.parametrize("error_line", [None, "garbage"])
def test_bulk_error_unreadable_fault_writes_a_line_that_is_no_outcome(
    sandbox: SandboxServer, token: str, error_line: str | None
) -> None:
    """Fault ``bulk_error_unreadable`` (BDX-13/22): as ``bulk_error_file``, but the error line cannot be read."""
    sandbox.admin.clear_faults()
    fault = {"kind": "bulk_error_unreadable", "resource_type": "Condition", "error_line": error_line, "times": 1}
    httpx.post(f"{sandbox.base_url}/admin/faults", json=fault).raise_for_status()
    manifest = run(sandbox, token, _type="Patient,Condition")
    assert {o["type"] for o in manifest["output"]} == {"Patient"}
    (error,) = manifest["error"]
    (line,) = httpx.get(error["url"], headers=bearer(token)).content.splitlines()
    if error_line is not None:
        assert line == error_line.encode()
    else:  # the fatal outcome for Condition, cut mid-line
        assert line.startswith(b'{"resourceType":"OperationOutcome"') and not line.endswith(b"}")


def test_bulk_short_body_fault_announces_more_than_it_sends(sandbox: SandboxServer, token: str) -> None:
    """Fault ``bulk_short_body`` (issue 10): Content-Length says the whole file, the connection closes at half."""
    url = run(sandbox, token, _type="Patient")["output"][0]["url"]
    sandbox.admin.set_fault("bulk_short_body", path="/bulk/files/", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url, headers=bearer(token))
    assert httpx.get(url, headers=bearer(token)).content.endswith(b"\n")
