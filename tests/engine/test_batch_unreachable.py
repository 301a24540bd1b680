"""A batch whose EHR cannot be reached defers its later members at that source, as a throttle does (BDX-10).

Before, each later member of the source was tried in turn and recorded ``failed`` (a failure streak each, retried
with backoff) though nothing was sent or received. Now the member that met the unreachable source fails with the
reason, and the later members at that source are ``deferred`` with ``not_before``: no request, no failure. A
failure after the host answered (a dropped answer) may be one member's own and defers nobody.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from dagster import DagsterInstance

from connectors.errors import EhrUnreachableError, TransportError
from engine import cursors, runs
from engine.batch_defer import DEFAULT_WAIT_S, source_throttle
from engine.retries import failure_streaks
from sandbox import SandboxConfig, SandboxServer
from store.models import Connection
from tests.engine.helpers import add_fault, connect_patient, sandbox_patients
from tests.engine.test_batch_runs import _batch, batch_after_first


def _connect_three(world, sb, http) -> list[str]:
    return sorted(connect_patient(world, sb, http=http, patient_id=p) for p in sandbox_patients(http, sb)[:3])


def _move_to(world, ids: list[str], base: str) -> None:
    """The source's FHIR base as the EHR's DNS name gone (every member of the source is at the same base)."""
    with world.env.db.session() as session:
        for cid in ids:
            conn = session.get(Connection, cid)
            assert conn is not None
            conn.fhir_base = base
        session.commit()


@pytest.mark.parametrize("how", ["refused", "unresolved"])
def test_an_unreachable_source_defers_the_members_after_the_first(world, http, request_log, how) -> None:
    """The sandbox EHR stops (connection refused at its port), or its host name no longer resolves."""
    with SandboxServer(SandboxConfig(patients=3, seed=11)) as sb:
        ids = _connect_three(world, sb, http)
        origin = sb.base_url
    if how == "unresolved":
        origin = "https://ehr-gone.invalid"
        _move_to(world, ids, f"{origin}/fhir")
    first, rest = ids[0], ids[1:]
    result, stopped, before = batch_after_first(world, ids, request_log)
    db = world.env.db
    assert "EhrUnreachableError" in (stopped.error or "") and "cannot reach the EHR" in (stopped.error or "")
    assert stopped.not_before is not None and stopped.not_before >= before + timedelta(seconds=DEFAULT_WAIT_S - 5)
    for cid in rest:
        row = runs.get(db, result.sync_run_ids[cid])
        assert row is not None and row.status == "deferred", row
        assert "the source is unreachable" in (row.error or "") and first in (row.error or ""), row.error
        assert row.not_before == stopped.not_before and row.started_at is None and row.counts == {}
        assert cursors.get_mark(db, cid, cursors.REST_STREAM, "Patient") is None
    tried = {str(url) for url in request_log.urls if str(url).startswith(origin)}
    assert tried and all("Patient" in url or "metadata" in url for url in tried), tried  # the first member's only
    assert set(failure_streaks(db)) == {first}  # the deferred ones start no failure streak


def test_a_dropped_answer_is_one_members_failure_and_defers_nobody(start_sandbox, world, http) -> None:
    """The host accepted the connection and dropped every Observation answer: not the source being unreachable,
    so every member is tried (each fails on Observation alone, its other types synced)."""
    sb = start_sandbox(patients=3)
    ids = _connect_three(world, sb, http)
    add_fault(http, sb, "drop", path="/fhir/Observation", times=None)
    with DagsterInstance.ephemeral() as instance:
        result = _batch(world, ids, instance)
    for cid in ids:
        row = runs.get(world.env.db, result.sync_run_ids[cid])
        assert row is not None and row.status == "failed" and row.not_before is None, row
        assert "Observation" in (row.error or "") and row.counts["Condition"]["fetched"] > 0, row


def _connect_error(url: str, timeout: bool = False) -> TransportError:
    request = httpx.Request("GET", url)
    cause = httpx.ConnectTimeout("timed out", request=request) if timeout else httpx.ConnectError("refused")
    if not timeout:
        cause.request = request
    error = TransportError(f"GET {url} failed after 3 attempt(s): {type(cause).__name__}")
    error.__cause__ = cause
    return error


def test_which_transport_failures_hold_the_source() -> None:
    """Source-level: no connection opened to the FHIR base or the token endpoint (refused, unresolved, connect
    timeout). Not: a host outside the source (an attachment's file server), a read timeout, a failure of no
    connection at all."""
    origins = frozenset({"https://fhir.example.org", "https://auth.example.org"})
    now = datetime(2026, 1, 1, tzinfo=UTC)
    token_down = source_throttle(_connect_error("https://auth.example.org/token"), "c1", now, origins)
    assert token_down is not None and token_down.state == "unreachable"
    assert token_down.until == now + timedelta(seconds=DEFAULT_WAIT_S)
    timeout = _connect_error("https://fhir.example.org/Patient/p1", timeout=True)
    assert source_throttle(timeout, "c1", now, origins) is not None
    unreachable = EhrUnreachableError("cannot reach the EHR at https://fhir.example.org")
    unreachable.__cause__ = _connect_error("https://fhir.example.org/Patient").__cause__
    assert source_throttle(unreachable, "c1", now, origins) is not None
    assert source_throttle(_connect_error("https://files.example.net/a.pdf"), "c1", now, origins) is None
    read_timeout = TransportError("read timeout")
    read_timeout.__cause__ = httpx.ReadTimeout("slow", request=httpx.Request("GET", "https://fhir.example.org/x"))
    assert source_throttle(read_timeout, "c1", now, origins) is None
    assert source_throttle(TransportError("no cause"), "c1", now, origins) is None


def test_a_failed_tls_handshake_with_the_source_defers_the_members_after_the_first(
    start_sandbox, world, http, request_log
) -> None:
    """The source's host accepts the connection but no TLS session can be set up with it (here: it speaks plain
    HTTP on an https base; in the field an expired or wrong certificate, a TLS-intercepting proxy): nothing was
    sent, and every member would fail the same way, so the later members are deferred as for a refused one."""
    sb = start_sandbox(patients=3)
    ids = _connect_three(world, sb, http)
    _move_to(world, ids, sb.base_url.replace("http://", "https://", 1) + "/fhir")
    result, stopped, _ = batch_after_first(world, ids, request_log)
    assert "no connection could be opened" not in (stopped.error or "")  # the member's own error names the cause
    assert stopped.not_before is not None, stopped
    for cid in ids[1:]:
        row = runs.get(world.env.db, result.sync_run_ids[cid])
        assert row is not None and row.status == "deferred", row
        assert "the source is unreachable (transport_error: no connection could be opened" in (row.error or "")
