"""Each sandbox fault ends with the sync finishing and nothing lost (content equals a clean sync's).

Runs are production's Dagster job in-process (``run_sync``), limited to the types the faults touch.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from engine import ConnectionNotSyncableError, runs
from store.models import AuditEvent, Connection
from tests.engine.helpers import add_fault, connect_patient, content_fingerprint, make_environment
from tests.engine.job_runs import run_sync

# The faulted types and one untouched (their referenced resources follow).
TYPES = ["Patient", "Condition", "Observation"]


@pytest.fixture(scope="module")
def clean_content(module_sandbox, tmp_path_factory):
    """What one undisturbed sync of the first patient puts in the warehouse (connection ids aside)."""
    with httpx.Client(timeout=30.0) as http:
        clean = make_environment(tmp_path_factory.mktemp("clean"), http=http)
        conn = connect_patient(clean, module_sandbox, http=http)
        report = run_sync(clean, conn, types=TYPES)
    assert report.status == "completed" and report.failed_types == {}, report.error
    return content_fingerprint(clean.env.warehouse_target, with_connection=False)


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("429", {"retry_after": "1", "times": 2}),
        ("503", {"retry_after": "1"}),
        ("500", {"times": 2}),
        ("drop", {}),
        ("expired_token", {}),
    ],
)
def test_fault_on_search_loses_nothing_bdx32(tmp_path, shared_sb, clean_content, http, request_log, kind, options):
    sb = shared_sb
    world = make_environment(tmp_path / "faulty", http=http)
    conn = connect_patient(world, sb, http=http)
    add_fault(http, sb, kind, path="/fhir/Observation", **options)
    request_log.clear()
    report = run_sync(world, conn, types=TYPES)
    assert report.status == "completed" and report.failed_types == {}, (report.error, report.failed_types)
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == clean_content
    if kind == "expired_token":
        assert request_log.paths("/oauth/token", method="POST"), "a 401 must trigger one refresh"


def test_slow_server_times_out_and_retries(tmp_path, shared_sb, clean_content):
    sb = shared_sb
    with httpx.Client(timeout=httpx.Timeout(0.5, connect=5.0)) as impatient:
        world = make_environment(tmp_path / "slow", http=impatient)
        conn = connect_patient(world, sb, http=impatient)
        add_fault(impatient, sb, "slow", path="/fhir/Condition", delay_s=1.5)
        report = run_sync(world, conn, types=TYPES)
    assert report.status == "completed" and report.failed_types == {}, report.failed_types
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == clean_content


def test_one_type_failing_fails_the_run_but_not_the_other_types(world, shared_sb, http):
    """Production's rule: a failed step fails the run (it is retried), the other types are stored all the same,
    and ``last_sync_at`` does not move."""
    sb = shared_sb
    conn = connect_patient(world, sb, http=http)
    add_fault(http, sb, "500", path="/fhir/Condition", times=None)
    report = run_sync(world, conn, types=TYPES)
    assert report.status == "failed"
    assert set(report.failed_types) == {"Condition"}
    assert "fhir_server_error" in report.failed_types["Condition"] or "500" in report.failed_types["Condition"]
    assert report.types["Observation"].created > 0
    run = runs.require(world.env.db, report.run_id)
    assert run.status == "failed" and "Condition" in (run.error or "")
    assert run.counts["Observation"]["created"] == report.types["Observation"].created
    with world.env.db.session() as session:
        assert session.get(Connection, conn).last_sync_at is None


def test_refused_refresh_stops_the_connection_sal25(world, shared_sb, http):
    sb = shared_sb
    conn = connect_patient(world, sb, http=http)
    add_fault(http, sb, "expired_token", path="/fhir/", times=None)
    add_fault(http, sb, "oauth_error", path="/oauth/token", error="invalid_grant", times=None)
    report = run_sync(world, conn, types=TYPES)
    assert not report.result.success and report.status == "failed"
    assert not any(r.created for r in report.types.values())  # nothing was stored
    assert runs.require(world.env.db, report.run_id).status == "failed"
    with world.env.db.session() as session:
        row = session.get(Connection, conn)
        assert row.status == "needs_reauth" and row.last_sync_at is None
    with pytest.raises(ConnectionNotSyncableError):
        run_sync(world, conn)


def test_sal25_refresh_grant_not_allowed_is_final_rfc6749(world, shared_sb, http, request_log):
    """RFC 6749 §5.2: ``unauthorized_client`` to a refresh means the client registration does not allow the
    refresh_token grant; retrying cannot change that. One refresh request, the connection needs re-authorization
    with a reason naming the registration, and a later sync sends nothing to the token endpoint."""
    sb = shared_sb
    conn = connect_patient(world, sb, http=http)
    add_fault(http, sb, "expired_token", path="/fhir/", times=None)
    add_fault(http, sb, "oauth_error", path="/oauth/token", error="unauthorized_client", times=None)
    request_log.clear()
    report = run_sync(world, conn, types=TYPES)
    assert report.status == "failed" and not any(r.created for r in report.types.values())
    assert len(request_log.paths("/oauth/token", method="POST")) == 1  # no retry, not one per type
    refused = [e for e in report.failed_types.values() if "unauthorized_client" in e]
    assert refused and "registration does not allow the refresh_token grant" in refused[0], report.failed_types
    with world.env.db.session() as session:
        assert session.get(Connection, conn).status == "needs_reauth"
        audit = session.scalars(select(AuditEvent).where(AuditEvent.connection_id == conn)).all()
        assert [(a.outcome, a.detail.get("reason")) for a in audit if a.action == "token.refresh"] == [
            ("needs_reauth", "refresh_grant_not_allowed")
        ]
    with pytest.raises(ConnectionNotSyncableError):
        run_sync(world, conn)
    assert len(request_log.paths("/oauth/token", method="POST")) == 1
