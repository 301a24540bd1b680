"""``ehrsync purge CONNECTION`` as an operator runs it: a real app database and a DuckDB warehouse holding data
synced from the sandbox; a confirmation prompt unless ``--yes``, a refusal for an active connection unless
``--disconnect``, a one-line error for an unknown id, and a second purge that finds nothing left."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
from sqlalchemy import select

from connectors.providers import get_provider
from engine.purge import PURGE_ACTION
from sandbox import SandboxServer
from store.models import AuditEvent, Connection
from store.rate_windows import RateSlot
from tests.ehrsync.cli_runs import DROPPED
from tests.engine.helpers import SyncWorld, connect_patient
from tests.engine.job_runs import run_sync
from tests.running_sync import sync_holding_the_lock

_ARMED = 1000
#: ``--budget-wait`` where the eCW budget is taken: more than one of its 2.5 s slots, far below the 60 s default
_BUDGET_WAIT_S = 6.0


def _cli(
    world: SyncWorld, tmp_path: Path, *args: str, answer: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED} | extra
    env["EHRSYNC_STATE_DIR"] = str(tmp_path / "state")
    env["INTEGRATIONS_TOKEN_ENC_KEY"] = base64.b64encode(world.cipher_key).decode()
    return subprocess.run(
        [sys.executable, "-m", "ehrsync.cli", *args], input=answer, capture_output=True, text=True, timeout=300, env=env
    )


def _one_line_error(proc: subprocess.CompletedProcess[str], *names: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and all(name in lines[0] for name in names), lines[0]


def _rows(world: SyncWorld, connection_id: str) -> int:
    con = duckdb.connect(world.env.warehouse_target, read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM fhir_resources WHERE connection_id = ?", [connection_id]).fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


def _printed(stdout: str) -> dict[str, int]:
    return {p[0]: int(p[1]) for line in stdout.splitlines() if len(p := line.split()) == 2 and p[1].isdigit()}


def test_purge_confirms_then_removes_the_connections_data(tmp_path: Path, ehr: SandboxServer, world: SyncWorld) -> None:
    assert world.env.http is not None
    cid = connect_patient(world, ehr, http=world.env.http)
    assert run_sync(world, cid, types=["Patient", "Observation", "DocumentReference"]).status == "completed"
    synced = _rows(world, cid)
    assert synced > 0

    _one_line_error(_cli(world, tmp_path, "purge", cid, "--yes"), "is active", "--disconnect")
    declined = _cli(world, tmp_path, "purge", cid, "--disconnect", answer="n\n")
    assert declined.returncode != 0 and "This cannot be undone" in declined.stdout and "Aborted" in declined.stderr
    assert _rows(world, cid) == synced
    with world.env.db.session() as s:
        assert s.get(Connection, cid).status == "active"  # type: ignore[union-attr]

    purged = _cli(world, tmp_path, "purge", cid, "--disconnect", answer="y\n")

    assert purged.returncode == 0, purged.stderr
    assert f"disconnected {cid}" in purged.stdout and f"purged connection {cid}:" in purged.stdout
    counts = _printed(purged.stdout)
    # every fhir_* table's rows: the resources, and the attachment links the DocumentReferences got
    assert counts["warehouse_rows"] > synced and counts["landing_files"] > 0 and counts["attachment_rows"] > 0
    assert _rows(world, cid) == 0 and not (Path(world.env.zone.root) / cid).exists()
    with world.env.db.session() as s:
        conn = s.get(Connection, cid)
        assert conn is not None and conn.status == "disconnected" and conn.data_purged_at is not None
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == PURGE_ACTION)).one()
        assert (event.actor, event.outcome) == ("cli", "success")
        assert event.detail["warehouse_rows"] == counts["warehouse_rows"]

    again = _cli(world, tmp_path, "purge", cid, "--yes")
    assert again.returncode == 0, again.stderr
    assert set(_printed(again.stdout).values()) == {0}


def test_purge_of_an_unknown_connection_is_one_line(tmp_path: Path, world: SyncWorld) -> None:
    _one_line_error(_cli(world, tmp_path, "purge", "no-such-connection", "--yes"), "not found", "no-such-connection")


def test_purge_refuses_a_budget_wait_that_is_not_a_number_of_seconds(tmp_path: Path, world: SyncWorld) -> None:
    """``--budget-wait nan`` passed click's range check (NaN compares false) and reached the eCW budget, which
    refused it with a message naming SharedRateBudget, not the option (or, for another vendor, went unused)."""
    for bad in ("nan", "-1", "inf", "abc"):
        proc = _cli(world, tmp_path, "purge", "some-connection", "--disconnect", "--yes", "--budget-wait", bad)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "Invalid value for '--budget-wait'" in proc.stderr, proc.stderr


def test_purge_refuses_a_budget_wait_without_disconnect(tmp_path: Path, world: SyncWorld) -> None:
    """``--budget-wait`` only shapes ``--disconnect``'s revocation: given alone it was accepted and ignored."""
    proc = _cli(world, tmp_path, "purge", "some-connection", "--yes", "--budget-wait", "5")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "--budget-wait applies only with --disconnect" in proc.stderr, proc.stderr


def test_purge_disconnect_revokes_within_the_ecw_call_budget_and_says_when_it_did_not(
    tmp_path: Path, ehr: SandboxServer, world: SyncWorld
) -> None:
    """``--disconnect`` of an eClinicalWorks connection spends eCW's shared call budget like every caller: with every
    call taken by syncs (for longer than the command waits) no discovery or revocation is sent, the tokens are deleted
    all the same, and the line printed and the audit row say they were not revoked at the EHR, and why."""
    assert world.env.http is not None
    cid = connect_patient(world, ehr, http=world.env.http, provider_id="ecw")
    with world.env.db.session() as s:
        conn = s.get(Connection, cid)
        assert conn is not None and conn.fhir_base == ehr.fhir_base
    limit = get_provider("ecw").rate_limit
    assert limit is not None and limit.across_processes
    slices = min(24, limit.capacity)
    slot_s, per_slot = limit.window_s / slices, limit.capacity // slices
    first, key = int(time.time() // slot_s), hashlib.sha256(ehr.fhir_base.encode()).hexdigest()
    # busy well past the command's wait (it waits --budget-wait slot by slot, then gives up), with room for the CLI
    # to start slowly on a loaded machine: a margin of a few seconds let the revocation through then
    spent = int((_BUDGET_WAIT_S + 600) / slot_s) + 1
    with world.env.db.session() as s, s.begin():
        s.add_all(RateSlot(key=key, slot=first + i, used=per_slot) for i in range(spent))
    ehr.admin.set_fault("slow", delay_s=0, times=_ARMED)  # counts every request the EHR gets from now on
    try:
        started = time.monotonic()
        purged = _cli(world, tmp_path, "purge", cid, "--disconnect", "--yes", "--budget-wait", f"{_BUDGET_WAIT_S:g}")
        took = time.monotonic() - started
        left = [f["times"] for f in ehr.admin.faults()]
    finally:
        ehr.admin.clear_faults()
    assert left == [_ARMED], left  # nothing was sent outside the budget: no discovery, no revocation
    # it waited for a free call before giving up: slot by slot until the next slot would open past --budget-wait
    # (SharedRateBudget.acquire stops then, as waiting longer cannot help), so at least the wait less one slot
    assert took >= _BUDGET_WAIT_S - slot_s, took

    assert purged.returncode == 0, purged.stderr
    assert f"disconnected {cid}: the tokens were deleted here but NOT revoked at the EHR" in purged.stdout
    assert "call budget had no free call, so the revocation was not sent" in purged.stdout
    with world.env.db.session() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "token.revoke")).one()
        assert (event.outcome, event.detail["revocation"], event.detail["error_code"]) == (
            "local_only",
            "not_sent",
            "call_budget_busy",
        )


def test_purge_disconnect_that_then_finds_the_connection_busy_says_it_was_disconnected(
    tmp_path: Path, ehr: SandboxServer, world: SyncWorld
) -> None:
    """``--disconnect`` disconnects (the line printed says what became of the tokens), then a running sync holds the
    connection past the wait: the one-line error says the connection was disconnected and stays so, and that a plain
    ``ehrsync purge`` now finishes it (which it does)."""
    assert world.env.http is not None
    cid = connect_patient(world, ehr, http=world.env.http)
    with sync_holding_the_lock(world.env.zone.root, cid):
        busy = _cli(world, tmp_path, "purge", cid, "--disconnect", "--yes", EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS="1")
    assert f"disconnected {cid}: " in busy.stdout, busy.stdout
    assert busy.returncode != 0 and "Traceback" not in busy.stderr, busy.stderr
    error = busy.stderr.strip().splitlines()[-1]  # the lines before it: the command's INFO log
    assert error.startswith("Error: connection_busy: ") and "is busy" in error, error
    assert f"connection {cid} was disconnected first and stays disconnected" in error
    assert f"run 'ehrsync purge {cid}' again" in error and "no --disconnect needed" in error
    with world.env.db.session() as s:
        conn = s.get(Connection, cid)
        assert conn is not None and conn.status == "disconnected" and conn.data_purged_at is None

    again = _cli(world, tmp_path, "purge", cid, "--yes")
    assert again.returncode == 0 and f"purged connection {cid}:" in again.stdout, again.stderr
