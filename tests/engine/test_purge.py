"""Purge of one connection (engine.purge) over really synced data: landing, warehouse, attachments, sync state,
audit; refusals, the connection lock, idempotence, and a purge killed midway that is run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from sqlalchemy import func, select, update
from sqlalchemy import text as sql_text

from engine import ConnectionBusyError, ConnectionNotFoundError
from engine.checkpoints import CRASH_ENV
from engine.models import BulkJob, SyncAttachment, SyncCursor
from engine.purge import PURGE_ACTION, PurgeRefusedError, PurgeTargets, PurgeWarehouseError, purge_connection
from store.models import AuditEvent, Connection, NoteOutbox
from store.outbox import NoteInput, enqueue_note
from store.outbox_redaction import PURGED_REASON
from tests.engine.helpers import SyncWorld, connect_patient, make_environment, sandbox_patients
from tests.engine.job_runs import run_sync, world_url
from tests.running_sync import sync_holding_the_lock
from warehouse import VIEW_NAMES, open_warehouse
from warehouse.duckdb_backend import DuckDBWarehouse
from warehouse.note_outbox import NOTE_OUTBOX_TABLE, ensure_note_outbox_table
from warehouse.snapshot import analyst_root, generations, publish_snapshot

TYPES = ["Patient", "Observation", "DocumentReference"]


def _synced(world: SyncWorld, sandbox: Any, http: Any, patient_index: int = 0) -> str:
    patient = sandbox_patients(http, sandbox)[patient_index]
    conn = connect_patient(world, sandbox, http=http, patient_id=patient)
    assert run_sync(world, conn, types=TYPES).status == "completed"
    _views(world.env.warehouse_target)
    return conn


def _views(target: str) -> None:
    """The analyst views (created by the analyst step of a deployment; here directly)."""
    with open_warehouse(target) as wh:
        wh.refresh_flat_tables()


def _rows(target: str, connection_id: str) -> dict[str, int]:
    con = duckdb.connect(target, read_only=True)
    try:
        counts = {
            table: con.execute(f"SELECT count(*) FROM {table} WHERE connection_id = ?", [connection_id]).fetchone()[0]
            for table in ("fhir_resources", "fhir_attachments", "patient", "observation")
        }
    finally:
        con.close()
    return counts


def _state_rows(world: SyncWorld, cid: str) -> dict[str, int]:
    with world.env.db.session() as s:
        return {
            model.__tablename__: s.scalar(select(func.count()).select_from(model).where(model.connection_id == cid))
            for model in (SyncCursor, SyncAttachment, BulkJob)
        }


def _audits(world: SyncWorld, connection_id: str) -> list[AuditEvent]:
    with world.env.db.session() as s:
        rows = s.scalars(
            select(AuditEvent).where(AuditEvent.connection_id == connection_id, AuditEvent.action == PURGE_ACTION)
        ).all()
        for row in rows:
            s.expunge(row)
        return list(rows)


def test_purge_removes_one_connections_data_and_nothing_else(world, shared_sb, http):
    gone, kept = _synced(world, shared_sb, http, 0), _synced(world, shared_sb, http, 1)
    env = world.env
    before_kept = _rows(env.warehouse_target, kept)
    assert _rows(env.warehouse_target, gone)["fhir_resources"] > 0 and before_kept["fhir_resources"] > 0
    assert _state_rows(world, gone)["sync_attachments"] > 0, "the sandbox's DocumentReferences carry attachments"
    blobs_before = {p for p in Path(env.attachments.root).rglob("*") if p.is_file()}
    assert any((Path(env.zone.root) / gone).rglob("*.parquet"))
    env.vault.revoke_and_delete(gone)

    report = purge_connection(PurgeTargets.of(env), gone, actor="test")

    counts = report.counts()
    assert counts["warehouse_rows"] > 0 and counts["landing_files"] > 0 and counts["sync_cursors"] > 0
    assert counts["attachment_rows"] > 0
    assert _rows(env.warehouse_target, gone) == dict.fromkeys(before_kept, 0)  # views follow fhir_resources live
    assert _rows(env.warehouse_target, kept) == before_kept
    assert _state_rows(world, gone) == {"sync_cursors": 0, "sync_attachments": 0, "bulk_jobs": 0}
    assert not (Path(env.zone.root) / gone).exists() and any((Path(env.zone.root) / kept).rglob("*.parquet"))
    # blobs only the purged connection referenced are gone; the other connection's are all still there
    with env.db.session() as s:
        kept_shas = set(s.scalars(select(SyncAttachment.sha256).where(SyncAttachment.connection_id == kept)))
        conn = s.get(Connection, gone)
        assert conn is not None and conn.data_purged_at is not None and conn.status == "disconnected"
    assert all(env.attachments.contains(sha) for sha in kept_shas)
    blobs_after = {p for p in Path(env.attachments.root).rglob("*") if p.is_file()}
    assert len(blobs_before) - len(blobs_after) == report.attachment_files
    (event,) = _audits(world, gone)
    assert event.outcome == "success" and event.actor == "test" and event.tenant_id == world.tenant_id
    assert event.detail["warehouse_rows"] == counts["warehouse_rows"]
    assert event.detail["warehouse_tables"] == sorted(report.warehouse_rows)
    _assert_no_phi(event.detail, env.warehouse_target, kept)


def _assert_no_phi(detail: dict[str, Any], warehouse: str, connection_id: str) -> None:
    """The audit detail holds counts and table names only: no name, birth date or resource id of anyone."""
    con = duckdb.connect(warehouse, read_only=True)
    try:
        names = con.execute("SELECT family, given, birth_date FROM patient WHERE connection_id = ?", [connection_id])
        phi = [v for row in names.fetchall() for v in row if v]
    finally:
        con.close()
    text = orjson.dumps(detail).decode()
    assert phi and not any(value in text for value in phi)
    assert all(isinstance(v, int) for k, v in detail.items() if k != "warehouse_tables")


def test_purge_is_idempotent(world, shared_sb, http):
    conn = _synced(world, shared_sb, http)
    world.env.vault.revoke_and_delete(conn)
    first = purge_connection(PurgeTargets.of(world.env), conn)
    again = purge_connection(PurgeTargets.of(world.env), conn)
    assert first.counts()["warehouse_rows"] > 0
    assert set(again.counts().values()) == {0}
    assert [e.outcome for e in _audits(world, conn)] == ["success", "success"]


def test_purge_refuses_an_active_connection_and_names_an_unknown_one(world, shared_sb, http):
    conn = connect_patient(world, shared_sb, http=http)
    with pytest.raises(PurgeRefusedError, match="is active: only a disconnected connection is purged"):
        purge_connection(PurgeTargets.of(world.env), conn)
    assert [(e.outcome, e.detail) for e in _audits(world, conn)] == [
        ("failure", {"error_code": "connection_not_disconnected"})
    ]
    with pytest.raises(ConnectionNotFoundError, match="'no-such-connection' not found"):
        purge_connection(PurgeTargets.of(world.env), "no-such-connection")


def test_purge_waits_for_a_running_sync_then_gives_up(world, shared_sb, http):
    """A sync holds the connection's lock; the purge does not race it (ConnectionBusyError after the wait)."""
    conn = _synced(world, shared_sb, http)
    world.env.vault.revoke_and_delete(conn)
    with sync_holding_the_lock(world.env.zone.root, conn):
        targets = PurgeTargets(
            world.env.db, world.env.zone.root, world.env.attachments, world.env.warehouse_target, 0.2
        )
        with pytest.raises(ConnectionBusyError, match="a-running-sync"):
            purge_connection(targets, conn)
    assert _rows(world.env.warehouse_target, conn)["fhir_resources"] > 0  # nothing was touched
    assert purge_connection(PurgeTargets.of(world.env), conn).counts()["warehouse_rows"] > 0


CRASHING_PURGE = """
import sys
from pathlib import Path
from engine.purge import PurgeTargets, purge_connection
from store import AppDatabase
from warehouse import AttachmentStore
url, root, target, conn = sys.argv[1:]
db = AppDatabase.from_url(url)
purge_connection(PurgeTargets(db, Path(root) / "landing", AttachmentStore(Path(root) / "attachments"), target), conn)
print("finished", flush=True)
"""


@pytest.mark.parametrize("point", ["purge.files_removed", "purge.warehouse_purged"])
def test_a_purge_killed_midway_is_finished_by_running_it_again(world, shared_sb, http, point):
    conn = _synced(world, shared_sb, http)
    world.env.vault.revoke_and_delete(conn)
    root = Path(world.env.zone.root).parent
    args = [world_url(world), str(root), world.env.warehouse_target, conn]
    env = {**os.environ, CRASH_ENV: point}
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_PURGE, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert not (Path(world.env.zone.root) / conn).exists()
    assert _state_rows(world, conn)["sync_cursors"] > 0  # the completion never committed
    with world.env.db.session() as s:
        assert s.get(Connection, conn).data_purged_at is None  # type: ignore[union-attr]

    finished = purge_connection(PurgeTargets.of(world.env), conn)

    assert finished.counts()["sync_cursors"] > 0 and finished.landing_files == 0
    assert _rows(world.env.warehouse_target, conn)["fhir_resources"] == 0
    assert _state_rows(world, conn) == {"sync_cursors": 0, "sync_attachments": 0, "bulk_jobs": 0}
    assert [e.outcome for e in _audits(world, conn)] == ["success"]


def test_purge_on_postgres_app_db_and_warehouse(tmp_path, shared_sb, http, postgres_url):
    world = make_environment(tmp_path / "pg", http=http, app_db_url=postgres_url, warehouse_target=postgres_url)
    gone, kept = _synced(world, shared_sb, http, 0), _synced(world, shared_sb, http, 1)
    world.env.vault.revoke_and_delete(gone)

    report = purge_connection(PurgeTargets.of(world.env), gone)

    assert set(report.warehouse_rows) >= {"fhir_resources", "fhir_attachments", "fhir_errors", "fhir_quarantine"}
    assert report.warehouse_rows["fhir_resources"] > 0
    import psycopg

    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as pg:
        left = pg.execute("SELECT connection_id, count(*) FROM fhir_resources GROUP BY 1").fetchall()
        in_view = pg.execute("SELECT count(*) FROM observation WHERE connection_id = %s", (gone,)).fetchone()
    assert [row[0] for row in left] == [kept] and in_view == (0,)
    assert _state_rows(world, gone) == {"sync_cursors": 0, "sync_attachments": 0, "bulk_jobs": 0}
    again = purge_connection(PurgeTargets.of(world.env), gone).counts()
    assert set(again.values()) == {0}, again
    # app database and warehouse share one schema here: the purge left the app database's own tables alone
    with world.env.db.session() as s:
        actions = set(s.scalars(select(AuditEvent.action).where(AuditEvent.connection_id == gone)))
    assert {"token.revoke", PURGE_ACTION} <= actions


def test_purge_republishes_the_analyst_snapshot_without_the_connection(world, shared_sb, http):
    """The snapshot's generations are copies: after a purge none of them may still hold the connection's rows."""
    gone, kept = _synced(world, shared_sb, http, 0), _synced(world, shared_sb, http, 1)
    env = world.env
    with open_warehouse(env.warehouse_target) as wh:
        assert isinstance(wh, DuckDBWarehouse)
        ensure_note_outbox_table(wh)
        for _ in range(2):
            publish_snapshot(wh, (*VIEW_NAMES, NOTE_OUTBOX_TABLE), keep=3)
        root = analyst_root(wh.path)
    env.vault.revoke_and_delete(gone)
    purge_connection(PurgeTargets.of(env), gone, actor="test")
    [generation] = generations(root)
    con = duckdb.connect(str(generation / "analyst.duckdb"), read_only=True)
    try:
        counts = dict(con.execute("SELECT connection_id, count(*) FROM patient GROUP BY 1").fetchall())
    finally:
        con.close()
    assert gone not in counts and counts[kept] == 1
    assert (root / "current").resolve() == generation.resolve()


def test_a_warehouse_that_cannot_be_purged_is_a_clear_error_and_audited(world, shared_sb, http):
    """A sync holding the warehouse past the wait, or a warehouse that is down: a typed error (the CLI's message,
    the API's 503), not a traceback; the purge is audited as failed and finishes when run again."""
    gone = _synced(world, shared_sb, http)
    env = world.env
    env.vault.revoke_and_delete(gone)
    down = PurgeTargets(env.db, Path(env.zone.root), env.attachments, "postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(PurgeWarehouseError, match="run the purge again") as caught:
        purge_connection(down, gone, actor="test")
    assert "127.0.0.1" not in str(caught.value) and caught.value.code == "warehouse_unavailable"
    assert [e.outcome for e in _audits(world, gone)] == ["failure"]
    assert purge_connection(PurgeTargets.of(env), gone, actor="test").counts()["warehouse_rows"] > 0


def _note(world: SyncWorld, connection_id: str, key: str) -> str:
    note = NoteInput(
        tenant_id=world.tenant_id, connection_id=connection_id, idempotency_key=key, patient_id="pat-1",
        title="Visit note for a patient", content_type="text/plain", body="Private clinical text",
        body_bytes=21, produced_by="scribe-model",
    )  # fmt: skip
    record, _ = enqueue_note(world.env.db, note, actor="test")
    return record.id


def test_dwb51_purge_keeps_draft_note_metadata_but_never_their_text(world, shared_sb, http):
    """A purged connection's notes lose body, title, server reason and the refusal's OperationOutcome issues kept
    with diagnostics (DWB-51); a waiting one can never be sent now."""
    conn = _synced(world, shared_sb, http)
    waiting, written = _note(world, conn, "k-waiting"), _note(world, conn, "k-written")
    refused = _note(world, conn, "k-refused")
    issues = {"issues": [{"severity": "error", "code": "invalid", "diagnostics": "Jane Doe: Private clinical text"}]}
    with world.env.db.session() as s:
        s.execute(update(NoteOutbox).where(NoteOutbox.id == written).values(state="written", reason="ok: stored"))
        s.execute(update(NoteOutbox).where(NoteOutbox.id == refused).values(state="failed", outcome_issues=issues))
        s.commit()
    world.env.vault.revoke_and_delete(conn)

    report = purge_connection(PurgeTargets.of(world.env), conn)

    assert report.counts()["notes_closed"] == 1 and report.counts()["notes_redacted"] == 3
    with world.env.db.session() as s:
        rows = {n.id: n for n in s.scalars(select(NoteOutbox).where(NoteOutbox.connection_id == conn))}
    assert [(r.body, r.title, r.reason, r.outcome_issues) for r in rows.values()] == [("", "", None, None)] * 3
    with world.env.db.engine.connect() as c:  # SQL NULL, not JSON 'null': a second purge finds nothing to blank
        assert c.execute(sql_text("SELECT count(*) FROM note_outbox WHERE outcome_issues IS NOT NULL")).scalar() == 0
    assert rows[waiting].state == "failed" and rows[waiting].reason_code == PURGED_REASON
    assert rows[waiting].version == 2 and rows[written].state == "written" and rows[written].body_bytes == 21
    assert set(purge_connection(PurgeTargets.of(world.env), conn).counts().values()) == {0}


def test_purge_opens_the_warehouse_with_the_configured_duckdb_limits(world, shared_sb, http, monkeypatch):
    """EHRSYNC_DUCKDB_MEMORY_LIMIT / _THREADS reach the purge's writer like every sync step's."""
    import engine.purge as purge_module

    conn = _synced(world, shared_sb, http)
    world.env.vault.revoke_and_delete(conn)
    world.env.duckdb_memory_limit, world.env.duckdb_threads = "96MB", 1
    seen: list[tuple[object, ...]] = []
    real = purge_module.open_warehouse

    def recording(target, **kw):
        wh = real(target, **kw)
        with wh.batch(), wh._read() as cur:  # the writer connection's own settings
            cur.execute("SELECT current_setting('memory_limit'), current_setting('threads')")
            seen.append(cur.fetchone())
        return wh

    monkeypatch.setattr(purge_module, "open_warehouse", recording)
    assert purge_connection(PurgeTargets.of(world.env), conn).counts()["warehouse_rows"] > 0
    assert seen and seen[0][1] == 1 and seen[0][0].startswith("91.")  # DuckDB shows 96 MB as 91.5 MiB
