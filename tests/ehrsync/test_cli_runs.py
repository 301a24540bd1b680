"""``ehrsync sync`` and ``ehrsync reconcile`` as an operator runs them, against the sandbox (issue 11).

``sync`` prints a line per resource type and a summary table, not Dagster's DEBUG log (that only with
``--verbose``); ``reconcile`` tombstones what the EHR deleted (BDX-31) and says how many rows; every refusal is
one line and a non-zero exit code.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine import PATIENT_TYPES, REFERENCED_TYPES
from sandbox import SandboxConfig, SandboxServer
from tests.engine.helpers import SyncWorld, connect_patient
from tests.pipelines.appdb import AppDb, make_app_db

_DROPPED = ("DATABASE_URL", "EHRSYNC_DATABASE_URL", "WAREHOUSE_URL", "DAGSTER_HOME", "EHRSYNC_HOME")


def _http(world: SyncWorld) -> httpx.Client:
    assert world.env.http is not None
    return world.env.http


def _cli(
    world: SyncWorld, tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``ehrsync ARGS`` over the world's state folder (its app database, warehouse and Dagster home)."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    env["EHRSYNC_STATE_DIR"] = str(tmp_path / "state")
    env["INTEGRATIONS_TOKEN_ENC_KEY"] = base64.b64encode(world.cipher_key).decode()
    env["EHRSYNC_SYNC_OVERLAP_SECONDS"] = "0"  # runs seconds apart: count exactly what changed
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "ehrsync.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


def _table(stdout: str) -> dict[str, list[str]]:
    """The summary table's rows by first cell (types and ``total``), between its header and the run line (the
    analyst views' line follows it)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["type", "fetched"])
    skip = ("-", "run ", "analyst views")
    rows = [line.split(maxsplit=6) for line in lines[start + 1 :] if line and not line.startswith(skip)]
    return {row[0]: [*row[1:], ""][:6] for row in rows}  # five counts and the note (empty when none)


def _one_line_error(proc: subprocess.CompletedProcess[str], *names: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and all(name in lines[0] for name in names), lines[0]


def test_sync_prints_progress_and_a_table_not_dagsters_log(
    tmp_path: Path, ehr: SandboxServer, world: SyncWorld
) -> None:
    http = _http(world)
    cid = connect_patient(world, ehr, http=http)

    proc = _cli(world, tmp_path, "sync", cid)

    assert proc.returncode == 0, proc.stderr
    assert "DEBUG" not in proc.stdout + proc.stderr and "STEP_" not in proc.stdout + proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
    table = _table(proc.stdout)
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

    verbose = _cli(world, tmp_path, "sync", cid, "--full", "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert "DEBUG" in verbose.stderr  # Dagster's own log, on request
    assert verbose.stdout.strip().splitlines()[-2].endswith("(full_resync) succeeded")
    full = _table(verbose.stdout)
    assert int(full["total"][1]) + int(full["total"][2]) == 0  # nothing created or updated
    assert int(full["total"][3]) == int(full["total"][0]) - int(full["total"][4])  # the rest unchanged


def test_sync_that_fails_a_type_says_which_and_why_and_exits_non_zero(
    tmp_path: Path, ehr: SandboxServer, world: SyncWorld
) -> None:
    http = _http(world)
    cid = connect_patient(world, ehr, http=http)
    trickle = {"kind": "trickle", "path": "/fhir/Observation", "delay_s": 0.2}
    http.post(f"{ehr.base_url}/admin/faults", json=trickle).raise_for_status()
    try:
        # 10 s, not 3: every landing step of the run has the budget, and on a busy CI machine an unfaulted one may
        # take seconds; the trickled Observation page (a byte per 0.2 s) needs minutes
        proc = _cli(world, tmp_path, "sync", cid, env_extra={"EHRSYNC_STEP_BUDGET_S": "10"})
    finally:
        http.delete(f"{ehr.base_url}/admin/faults").raise_for_status()

    assert proc.returncode == 1, proc.stderr
    assert "  Observation: landing step failed" in proc.stdout
    table = _table(proc.stdout)
    note = table["Observation"][5]
    assert note.startswith("failed: ") and "landing Observation exceeded its 10 s budget" in note, note
    assert table["Patient"][5] == "" and int(table["Patient"][0]) == 1  # the other types still synced
    assert proc.stdout.strip().splitlines()[-1].endswith("failed (steps: landing__Observation)")
    assert "Traceback" not in proc.stderr and "DEBUG" not in proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"Error: run {proc.stdout.split()[1]} failed steps: landing__Observation"
    )


def test_reconcile_tombstones_what_the_ehr_deleted_bdx31(tmp_path: Path, ehr: SandboxServer, world: SyncWorld) -> None:
    http = _http(world)
    cid = connect_patient(world, ehr, http=http)
    assert _cli(world, tmp_path, "sync", cid).returncode == 0
    deleted = http.post(f"{ehr.base_url}/admin/mutate", json={"delete": 2, "seed": 3})
    deleted.raise_for_status()
    assert len(deleted.json()["deleted"]) == 2

    proc = _cli(world, tmp_path, "reconcile", cid)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"reconciled {cid}: 2 row(s) tombstoned"
    assert "DEBUG" not in proc.stderr
    again = _cli(world, tmp_path, "reconcile", cid)
    assert again.returncode == 0 and again.stdout.strip() == f"reconciled {cid}: 0 row(s) tombstoned", again.stderr


def test_reconcile_names_a_type_whose_deletions_the_grant_lets_nothing_confirm(
    tmp_path: Path, world: SyncWorld
) -> None:
    """A grant with ``patient/Observation.s`` but no ``.r``, at a server that ignores ``_id``: the op succeeds and
    keeps those rows live, and the command says so per type instead of printing only the tombstoned count (the
    reason was in the run's log alone, which the command hides unless asked to be verbose)."""
    http = _http(world)
    scope = "launch/patient openid fhirUser offline_access patient/Patient.rs patient/Observation.s"
    with SandboxServer(SandboxConfig(patients=1, seed=5, ignored_search_params=["_id"])) as one:
        cid = connect_patient(world, one, http=http, scope=scope)
        assert _cli(world, tmp_path, "sync", cid).returncode == 0
        deleted = [ref.split("/")[0] for ref in one.admin.mutate(delete=25, seed=3)["deleted"]]
        assert "Observation" in deleted
        proc = _cli(world, tmp_path, "reconcile", cid)

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == f"reconciled {cid}: {deleted.count('Patient')} row(s) tombstoned"
    assert lines[1].startswith("  Observation: deletions not confirmed, rows kept live: ")
    assert "patient/Observation.r not granted" in lines[1] and len(lines) == 2


@pytest.fixture
def app_db(world: SyncWorld) -> Iterator[AppDb]:
    """The world's app database, with a tenant for connections added by hand (no tokens)."""
    added = make_app_db(world.env.db.engine.url.render_as_string(hide_password=False), migrated=True)
    yield added
    added.db.dispose()


@pytest.mark.parametrize(
    ("kind", "status", "names"),
    [
        (None, None, ("not found", "no-such-connection")),
        ("backend", "active", ("cannot be reconciled", "bulk=True")),
        ("patient", "disabled", ("cannot be reconciled", "disabled")),
        ("patient", "active", ("reconciliation run", "failed")),  # no token, EHR unreachable: the run fails
    ],
    ids=["unknown", "bulk", "inactive", "failed-run"],
)
def test_reconcile_refusals_are_one_line(
    tmp_path: Path, world: SyncWorld, app_db: AppDb, kind: str | None, status: str | None, names: tuple[str, ...]
) -> None:
    cid = app_db.add(kind=kind, status=status) if kind is not None and status is not None else "no-such-connection"
    proc = _cli(world, tmp_path, "reconcile", cid)
    _one_line_error(proc, *names)
