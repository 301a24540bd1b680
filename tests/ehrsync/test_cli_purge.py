"""``ehrsync purge CONNECTION`` as an operator runs it: a real app database and a DuckDB warehouse holding data
synced from the sandbox; a confirmation prompt unless ``--yes``, a refusal for an active connection unless
``--disconnect``, a one-line error for an unknown id, and a second purge that finds nothing left."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import duckdb
from sqlalchemy import select

from engine.purge import PURGE_ACTION
from sandbox import SandboxServer
from store.models import AuditEvent, Connection
from tests.engine.helpers import SyncWorld, connect_patient
from tests.engine.job_runs import run_sync

_DROPPED = ("DATABASE_URL", "EHRSYNC_DATABASE_URL", "WAREHOUSE_URL", "DAGSTER_HOME", "EHRSYNC_HOME")


def _cli(world: SyncWorld, tmp_path: Path, *args: str, answer: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
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
