"""A kick-off's claim of an export slot (BDX-07) is a lease its taker renews (``engine.export_slot_lease``).

Another host's process cannot be checked, so its claim is taken over only once past its expiry. Before, the taker
set that once, past the longest a kick-off may last (``claim_ttl``: about 2 h with the defaults), and a kick-off
killed on another host held the slot that long. Now it expires a lease after the taker's last renewal: while the
taker lives, its claim outlives any one lease; killed, its claim is taken over a lease later."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update

from connectors.errors import BulkExportBusyError
from engine import run_bulk_export
from engine.connection_info import load_connection
from engine.export_slot_lease import renewed
from engine.export_slot_tags import export_slot
from engine.export_slots import claim_slot
from engine.models import ExportSlotClaim, utcnow
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, make_environment
from tests.engine.test_export_slot_claims import _kickoffs, _pair

LEASE_S = 10.0  # renewed every second: a loaded machine still renews many times within a lease

_TAKER = """
import sys, time
from datetime import timedelta
from pathlib import Path
from engine import export_slots
from engine.connection_info import load_connection
from tests.engine.helpers import make_environment

root, url, tenant, connection_id, lease_s = sys.argv[1:]
world = make_environment(Path(root), app_db_url=url or None, migrate=False, tenant_id=tenant)
conn = load_connection(world.env.db, connection_id)
export_slots.socket.gethostname = lambda: "another-host"  # its claim names a host this one cannot check
with export_slots.claim_slot(world.env, conn, "elsewhere", lease=timedelta(seconds=float(lease_s))):
    print("claimed", flush=True)
    time.sleep(600)  # a kick-off under way, until killed
"""


def _claim(world: SyncWorld, slot: str) -> ExportSlotClaim | None:
    with world.env.db.session() as session:
        return session.get(ExportSlotClaim, slot)


def _until_past(moment: Any) -> None:
    deadline = time.monotonic() + 120
    while utcnow() <= moment:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_bdx07_another_hosts_claim_lives_while_renewed_and_is_taken_over_a_lease_after_its_taker_died(
    shared_sb: Any, slot_world: SyncWorld, http: httpx.Client, request_log: RequestLog, tmp_path: Path
) -> None:
    world = slot_world
    first, second = _pair(world, shared_sb, http)
    conn = load_connection(world.env.db, first)
    slot = export_slot(conn.provider_id, conn.client_id, conn.fhir_base)
    assert slot is not None
    url = "" if world.env.db.dialect == "sqlite" else world.env.db.engine.url.render_as_string(hide_password=False)
    args = [str(tmp_path / "world"), url, world.tenant_id, first, str(LEASE_S)]
    taker = subprocess.Popen([sys.executable, "-c", _TAKER, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert taker.stdout is not None and taker.stdout.readline().strip() == "claimed"
        claim = _claim(world, slot)
        assert claim is not None and claim.owner_host == "another-host"
        assert claim.expires_at - claim.claimed_at == timedelta(seconds=LEASE_S)  # before: claim_ttl, ~2 h
        _until_past(claim.expires_at)  # its first lease is over: renewed, the claim still holds the slot
        renewed = _claim(world, slot)
        assert renewed is not None and renewed.token == claim.token and renewed.expires_at > utcnow()
        busy = run_bulk_export(world.env, second, "while-renewed")
        assert busy.error is not None and "has a kick-off (run elsewhere) in progress" in busy.error, busy.error
    finally:
        taker.send_signal(signal.SIGKILL)  # the kick-off's process dies on its host; its claim stays
        taker.wait(60)
    last = _claim(world, slot)
    assert last is not None
    assert last.expires_at <= utcnow() + timedelta(seconds=LEASE_S)
    _until_past(last.expires_at)
    assert not _kickoffs(request_log)
    taken = run_bulk_export(world.env, second, "a-lease-later")
    assert taken.status == "completed", taken.error
    assert len(_kickoffs(request_log)) == 1


def test_bdx07_a_claims_lease_is_renewed_no_further_than_its_takers_longest_kick_off(slot_world: SyncWorld) -> None:
    """Renewals stop at ``claim_ttl`` after the claim (``until``): a taker stuck past any kick-off's length (its
    kick-off hung, its renewing thread alive) frees the slot then, as it did before leases."""
    db = slot_world.env.db
    now = utcnow()
    until = now + timedelta(seconds=2)
    owner = {"connection_id": "c", "run_id": "r", "owner_pid": os.getpid(), "owner_host": "h", "claimed_at": now}
    with db.session() as session:
        session.add(ExportSlotClaim(slot="s", token="t" * 32, expires_at=now + timedelta(seconds=1), **owner))
        session.commit()
    with renewed(db, "s", "t" * 32, timedelta(seconds=LEASE_S), until):
        deadline = time.monotonic() + 60
        while (claim := _claim(slot_world, "s")) is not None and claim.expires_at != until:
            assert claim.expires_at <= until and time.monotonic() < deadline, claim.expires_at
            time.sleep(0.1)
    assert claim is not None and claim.expires_at == until


def test_bdx07_a_claim_renewed_between_a_takeovers_read_and_its_delete_is_kept(
    shared_sb: Any, postgres_url: str, tmp_path: Path, http: httpx.Client, request_log: RequestLog
) -> None:
    """PostgreSQL reads the expired claim without a lock, so its taker's renewal can land before the takeover's
    DELETE. Before, that DELETE went by token alone and removed the renewed claim: two live kick-offs of one slot.
    Now it also needs the expiry it read, so the renewed claim stays and the second kick-off is refused busy."""
    world = make_environment(tmp_path / "world", http=http, app_db_url=postgres_url)
    first, second = _pair(world, shared_sb, http)
    conn = load_connection(world.env.db, second)
    slot = export_slot(conn.provider_id, conn.client_id, conn.fhir_base)
    assert slot is not None
    now = utcnow()
    owner = {"connection_id": first, "run_id": "stalled", "owner_pid": 1, "owner_host": "another-host"}
    with world.env.db.session() as session:
        session.add(ExportSlotClaim(slot=slot, token="t" * 32, claimed_at=now, expires_at=now, **owner))
        session.commit()
    renewals: list[str] = []

    def renew_first(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM EXPORT_SLOT_CLAIMS") and not renewals:
            renewals.append(statement)  # the stalled taker's renewal lands just before the takeover's delete
            with world.env.db.engine.connect() as other:
                other.execute(
                    update(ExportSlotClaim)
                    .where(ExportSlotClaim.token == "t" * 32)
                    .values(expires_at=utcnow() + timedelta(minutes=5))
                )
                other.commit()

    event.listen(world.env.db.engine, "before_cursor_execute", renew_first)
    try:
        with pytest.raises(BulkExportBusyError, match="run stalled"), claim_slot(world.env, conn, "taker"):
            pass
    finally:
        event.remove(world.env.db.engine, "before_cursor_execute", renew_first)
    assert renewals
    kept = _claim(world, slot)
    assert kept is not None and kept.token == "t" * 32 and kept.run_id == "stalled"
    assert not _kickoffs(request_log)


def test_bdx07_a_renewal_failing_with_a_non_database_error_is_retried_and_the_claim_lives_on(
    slot_world: SyncWorld, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the renewing thread caught only SQLAlchemy's errors: any other (an OSError from the database's file, a
    driver error SQLAlchemy does not wrap) ended it silently, and the kick-off ran on a claim nobody renewed, taken
    over by another kick-off a lease later. Now the failure is logged by type and the next renewal lands."""
    db = slot_world.env.db
    lease = timedelta(seconds=1)  # renewed every 0.1 s
    now = utcnow()
    owner = {"connection_id": "c", "run_id": "r", "owner_pid": os.getpid(), "owner_host": "h", "claimed_at": now}
    with db.session() as session:
        session.add(ExportSlotClaim(slot="s", token="t" * 32, expires_at=now + lease, **owner))
        session.commit()
    renewals: list[str] = []

    def fail_first(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE EXPORT_SLOT_CLAIMS"):
            renewals.append(statement)
            if len(renewals) == 1:
                raise OSError("disk I/O error")  # not an SQLAlchemyError: SQLAlchemy passes it on unwrapped

    event.listen(db.engine, "before_cursor_execute", fail_first)
    try:
        with (
            caplog.at_level("WARNING", "engine.export_slot_lease"),
            renewed(db, "s", "t" * 32, lease, now + 10 * lease),
        ):
            deadline = time.monotonic() + 60
            while len(renewals) < 3:  # the failed renewal, then two that landed
                assert time.monotonic() < deadline, "no renewal after the failed one: the renewing thread died"
                time.sleep(0.05)
    finally:
        event.remove(db.engine, "before_cursor_execute", fail_first)
    claim = _claim(slot_world, "s")
    assert claim is not None and claim.expires_at > now + lease  # moved on by the renewals after the failure
    failures = [r.getMessage() for r in caplog.records if "could not renew" in r.getMessage()]
    assert len(failures) == 1 and "(OSError)" in failures[0], failures
    assert "t" * 32 not in caplog.text and "disk I/O" not in caplog.text
