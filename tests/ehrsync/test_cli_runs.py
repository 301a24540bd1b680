"""``ehrsync sync`` as an operator runs it, against the sandbox (issue 11): it prints a line per resource type and a
summary table, not Dagster's DEBUG log (that only with ``--verbose``); a failed type is named, with a non-zero exit
code. ``ehrsync reconcile``: test_cli_reconcile.py.
"""

from __future__ import annotations

from pathlib import Path

from engine import PATIENT_TYPES, REFERENCED_TYPES
from sandbox import SandboxServer
from tests.ehrsync.cli_runs import http_of, run_cli, summary_table
from tests.engine.helpers import SyncWorld, connect_patient


def test_sync_prints_progress_and_a_table_not_dagsters_log(
    tmp_path: Path, ehr: SandboxServer, world: SyncWorld
) -> None:
    http = http_of(world)
    cid = connect_patient(world, ehr, http=http)

    proc = run_cli(world, tmp_path, "sync", cid)

    assert proc.returncode == 0, proc.stderr
    assert "DEBUG" not in proc.stdout + proc.stderr and "STEP_" not in proc.stdout + proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
    table = summary_table(proc.stdout)
    types = {*PATIENT_TYPES, *REFERENCED_TYPES}
    assert set(table) == {*types, "total"}
    counts = {t: [int(c) for c in row[:5]] for t, row in table.items()}
    assert counts["total"] == [sum(counts[t][i] for t in types) for i in range(5)]
    assert counts["Patient"][:2] == [1, 1]  # fetched, created
    assert counts["Observation"][0] > 0
    for rtype in PATIENT_TYPES:  # a line per type as its upsert finished, before the table
        assert f"  {rtype}: " in proc.stdout.split("\ntype ")[0], rtype
    assert proc.stdout.strip().splitlines()[-2].endswith("(incremental_sync) succeeded")
    # then the analyst views, refreshed by their own job, and the snapshot analysts open
    snapshot = tmp_path / "state" / "analyst" / "current" / "analyst.duckdb"
    assert proc.stdout.strip().splitlines()[-1].endswith(f"refreshed; snapshot {snapshot}"), proc.stdout
    assert snapshot.is_file()
    assert len(proc.stdout.splitlines()) < 3 * len(types) + 10

    verbose = run_cli(world, tmp_path, "sync", cid, "--full", "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert "DEBUG" in verbose.stderr  # Dagster's own log, on request
    assert verbose.stdout.strip().splitlines()[-2].endswith("(full_resync) succeeded")
    full = summary_table(verbose.stdout)
    assert int(full["total"][1]) + int(full["total"][2]) == 0  # nothing created or updated
    assert int(full["total"][3]) == int(full["total"][0]) - int(full["total"][4])  # the rest unchanged


def test_sync_that_fails_a_type_says_which_and_why_and_exits_non_zero(
    tmp_path: Path, ehr: SandboxServer, world: SyncWorld
) -> None:
    http = http_of(world)
    cid = connect_patient(world, ehr, http=http)
    # a business-rule rejection of every Observation search (a permanent answer: the type fails at once; a step
    # over its time budget is tests/engine/test_rest_bounds.py's, and waited out a 10 s budget here)
    refuse = {"kind": "422", "path": "/fhir/Observation", "times": None}
    http.post(f"{ehr.base_url}/admin/faults", json=refuse).raise_for_status()
    try:
        proc = run_cli(world, tmp_path, "sync", cid)
    finally:
        http.delete(f"{ehr.base_url}/admin/faults").raise_for_status()

    assert proc.returncode == 1, proc.stderr
    assert "  Observation: landing step failed" in proc.stdout
    table = summary_table(proc.stdout)
    note = table["Observation"][5]
    assert note.startswith("failed: ") and "/fhir/Observation answered HTTP 422" in note, note
    assert table["Patient"][5] == "" and int(table["Patient"][0]) == 1  # the other types still synced
    assert proc.stdout.strip().splitlines()[-1].endswith("failed (steps: landing__Observation)")
    assert "Traceback" not in proc.stderr and "DEBUG" not in proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"Error: run {proc.stdout.split()[1]} failed steps: landing__Observation"
    )
