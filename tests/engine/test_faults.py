"""Each sandbox fault ends with the sync finishing and nothing lost (content equals a clean sync's)."""

from __future__ import annotations

import httpx
import pytest

from engine import ConnectionNotSyncableError, runs, sync_connection
from store.models import Connection
from tests.engine.helpers import add_fault, connect_patient, content_fingerprint, make_environment


@pytest.fixture(scope="module")
def clean_content(module_sandbox, tmp_path_factory):
    """What one undisturbed sync of the first patient puts in the warehouse (connection ids aside)."""
    with httpx.Client(timeout=30.0) as http:
        clean = make_environment(tmp_path_factory.mktemp("clean"), http=http)
        conn = connect_patient(clean, module_sandbox, http=http)
        report = sync_connection(clean.env, conn)
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
    report = sync_connection(world.env, conn)
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
        report = sync_connection(world.env, conn)
    assert report.status == "completed" and report.failed_types == {}, report.failed_types
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == clean_content


def test_one_type_failing_does_not_stop_the_others(world, shared_sb, http):
    sb = shared_sb
    conn = connect_patient(world, sb, http=http)
    add_fault(http, sb, "500", path="/fhir/Condition", times=None)
    report = sync_connection(world.env, conn)
    assert report.status == "completed"
    assert set(report.failed_types) == {"Condition"}
    assert "fhir_server_error" in report.failed_types["Condition"] or "500" in report.failed_types["Condition"]
    assert report.types["Observation"].created > 0
    run = runs.require(world.env.db, report.run_id)
    assert run.status == "completed" and "Condition" in (run.error or "")


def test_refused_refresh_stops_the_connection_sal25(world, shared_sb, http):
    sb = shared_sb
    conn = connect_patient(world, sb, http=http)
    add_fault(http, sb, "expired_token", path="/fhir/", times=None)
    add_fault(http, sb, "oauth_error", path="/oauth/token", error="invalid_grant", times=None)
    report = sync_connection(world.env, conn)
    assert report.needs_reauth and report.status == "failed"
    assert sum(1 for r in report.types.values() if r.error) == 0  # stopped, not reported per type
    assert runs.require(world.env.db, report.run_id).status == "failed"
    with world.env.db.session() as session:
        assert session.get(Connection, conn).status == "needs_reauth"
    with pytest.raises(ConnectionNotSyncableError):
        sync_connection(world.env, conn)
