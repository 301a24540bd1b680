"""``ehrsync reconcile`` as an operator runs it, against the sandbox (issue 11): it tombstones what the EHR deleted
(BDX-31) and says how many rows; every refusal is one line and a non-zero exit code. ``ehrsync sync``:
test_cli_runs.py, so the first sync here (what there is to reconcile) runs in-process, the same job over the same
state folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import SandboxConfig, SandboxServer
from tests.ehrsync.cli_runs import http_of, one_line_error, run_cli
from tests.engine.helpers import SyncWorld, connect_patient
from tests.engine.job_runs import run_sync
from tests.pipelines.appdb import AppDb, make_app_db


def test_reconcile_tombstones_what_the_ehr_deleted_bdx31(tmp_path: Path, ehr: SandboxServer, world: SyncWorld) -> None:
    http = http_of(world)
    cid = connect_patient(world, ehr, http=http)
    assert run_sync(world, cid).status == "completed"
    deleted = http.post(f"{ehr.base_url}/admin/mutate", json={"delete": 2, "seed": 3})
    deleted.raise_for_status()
    assert len(deleted.json()["deleted"]) == 2

    proc = run_cli(world, tmp_path, "reconcile", cid)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"reconciled {cid}: 2 row(s) tombstoned"
    assert "DEBUG" not in proc.stderr
    again = run_cli(world, tmp_path, "reconcile", cid)
    assert again.returncode == 0 and again.stdout.strip() == f"reconciled {cid}: 0 row(s) tombstoned", again.stderr


def test_reconcile_names_a_type_whose_deletions_the_grant_lets_nothing_confirm(
    tmp_path: Path, world: SyncWorld
) -> None:
    """A grant with ``patient/Observation.s`` but no ``.r``, at a server that ignores ``_id``: the op succeeds and
    keeps those rows live, and the command says so per type instead of printing only the tombstoned count (the
    reason was in the run's log alone, which the command hides unless asked to be verbose)."""
    http = http_of(world)
    scope = "launch/patient openid fhirUser offline_access patient/Patient.rs patient/Observation.s"
    with SandboxServer(SandboxConfig(patients=1, seed=5, ignored_search_params=["_id"])) as one:
        cid = connect_patient(world, one, http=http, scope=scope)
        assert run_sync(world, cid).status == "completed"
        deleted = [ref.split("/")[0] for ref in one.admin.mutate(delete=25, seed=3)["deleted"]]
        assert "Observation" in deleted
        proc = run_cli(world, tmp_path, "reconcile", cid)

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
        # no token, EHR unreachable: the run fails, and the line says which types were not reconciled and why
        # (the op's failure; the command hides the run's log unless asked to be verbose)
        ("patient", "active", ("reconciliation run", "failed: reconciled", "not reconciled", "Patient: ")),
    ],
    ids=["unknown", "bulk", "inactive", "failed-run"],
)
def test_reconcile_refusals_are_one_line(
    tmp_path: Path, world: SyncWorld, app_db: AppDb, kind: str | None, status: str | None, names: tuple[str, ...]
) -> None:
    cid = app_db.add(kind=kind, status=status) if kind is not None and status is not None else "no-such-connection"
    proc = run_cli(world, tmp_path, "reconcile", cid)
    one_line_error(proc, *names)
