"""What a run did not receive is asked for again (issue 10), against a scripted FHIR server on a real socket.

An attachment the server failed to send holds the type's mark (the next run fetches the resource and retries
it); a step budget spent on attachments stops the landing instead of completing it without them; a full
resync whose search stopped early clears the type's stored mark (an older mark would skip what it missed) and
fails the run; OperationOutcome diagnostics reach neither the run's error nor a log record (they may carry PHI).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from connectors.errors import EhrSyncError, FhirError
from engine import cursors
from engine.attachments import attachments_of
from tests.engine.fake_fhir import FakeFhir, Reply, bundle, serve
from tests.engine.helpers import SyncWorld, connect_static, make_environment
from tests.engine.job_runs import run_sync, sync_type

DOC_UPDATED = "2026-10-01T00:00:00Z"
OLD_MARK = datetime(2026, 10, 10, tzinfo=UTC)  # later than the document: an incremental search skips it
MARKER = "PHI-MARKER-Jane-Doe-1970"


def _doc() -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "id": "d1",
        "meta": {"lastUpdated": DOC_UPDATED},
        "status": "current",
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"url": "Binary/note", "contentType": "text/plain"}}],
    }


def _newer_than(query: dict[str, list[str]], updated: str) -> bool:
    """Honour ``_lastUpdated=gt...`` like a real server: a resource older than the mark is not returned."""
    bounds = [v[2:] for v in query.get("_lastUpdated", []) if v.startswith("gt")]
    return not bounds or datetime.fromisoformat(updated) > datetime.fromisoformat(bounds[0])


def _diagnostics(status: int, text: str) -> Reply:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": text}],
    }
    return status, {"Content-Type": "application/fhir+json"}, orjson.dumps(body)


def _documents_server(binary: dict[str, Any]) -> FakeFhir:
    """DocumentReference d1 (updated before OLD_MARK) whose attachment answers as ``binary`` says."""
    fake = FakeFhir()

    def documents(_path: str, query: dict[str, list[str]]) -> Reply:
        found = [_doc()] if _newer_than(query, DOC_UPDATED) else []
        return bundle(found, last_updated="2026-10-20T00:00:00Z")

    def note(_path: str, _q: dict[str, list[str]]) -> Reply:
        time.sleep(binary.get("delay_s", 0.0))
        if binary.get("status", 200) != 200:
            return _diagnostics(binary["status"], f"cannot render note of {MARKER}")
        return 200, {"Content-Type": "text/plain"}, b"note text"

    fake.routes.update({"/fhir/DocumentReference": documents, "/fhir/Binary/note": note})
    return fake


def _set_mark(world: SyncWorld, conn: str, rtype: str, mark: datetime) -> None:
    with world.env.db.locked_session() as session:
        cursors.advance(session, conn, cursors.REST_STREAM, rtype, "earlier-run", mark)
        session.commit()


def _mark(world: SyncWorld, conn: str, rtype: str) -> datetime | None:
    return cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, rtype)


def test_attachment_the_server_failed_to_send_holds_the_mark_and_is_retried(world: SyncWorld) -> None:
    binary: dict[str, Any] = {"status": 503}
    with serve(_documents_server(binary)) as fake:
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        _set_mark(world, conn, "DocumentReference", datetime(2026, 9, 1, tzinfo=UTC))
        docs = sync_type(world, conn, "DocumentReference")
        assert (docs.attachments, docs.attachments_failed) == (0, 1)
        assert any("attachment(s) not stored" in w for w in docs.warnings), docs.warnings
        assert _mark(world, conn, "DocumentReference") == datetime(2026, 9, 1, tzinfo=UTC)  # held, not 2026-10-20

        binary["status"] = 200
        again = sync_type(world, conn, "DocumentReference")
    assert again.attachments == 1, again
    assert [a.size for a in attachments_of(world.env, conn, "DocumentReference", "d1")] == [9]
    assert _mark(world, conn, "DocumentReference") == datetime(2026, 10, 20, tzinfo=UTC)


def test_full_resync_with_a_failed_attachment_clears_the_old_mark(world: SyncWorld) -> None:
    binary: dict[str, Any] = {"status": 503}
    with serve(_documents_server(binary)) as fake:
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        _set_mark(world, conn, "DocumentReference", OLD_MARK)
        sync_type(world, conn, "DocumentReference", full=True)
        assert _mark(world, conn, "DocumentReference") is None  # OLD_MARK would skip d1 (updated before it)
        binary["status"] = 200
        again = sync_type(world, conn, "DocumentReference")
    assert again.attachments == 1


def test_step_budget_spent_on_attachments_stops_the_landing_mark_untouched(tmp_path: Any, http: Any) -> None:
    world = make_environment(tmp_path / "w", http=http, step_budget_s=1.0)
    binary: dict[str, Any] = {"delay_s": 3.0}
    with serve(_documents_server(binary)) as fake:
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        _set_mark(world, conn, "DocumentReference", datetime(2026, 9, 1, tzinfo=UTC))
        with pytest.raises(EhrSyncError) as raised:
            sync_type(world, conn, "DocumentReference")
        assert raised.value.code == "step_budget_exceeded", raised.value
        assert _mark(world, conn, "DocumentReference") == datetime(2026, 9, 1, tzinfo=UTC)
        binary["delay_s"] = 0.0
        world.env.step_budget_s = 60.0  # the well server's step need not fit in 1 s on a busy CI machine
        again = sync_type(world, conn, "DocumentReference")
    assert again.attachments == 1


def _stops_early(fixed: dict[str, bool]) -> FakeFhir:
    """Observations o1..o4, all updated before OLD_MARK; until ``fixed``, every search stops after two."""
    fake = FakeFhir()
    obs: list[dict[str, Any]] = [
        {
            "resourceType": "Observation",
            "id": f"o{i}",
            "meta": {"lastUpdated": f"2026-10-0{i}T00:00:00Z"},
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/p1"},
        }
        for i in range(1, 5)
    ]

    def observations(_path: str, query: dict[str, list[str]]) -> Reply:
        found = [o for o in obs if _newer_than(query, o["meta"]["lastUpdated"])]
        shown = found if fixed["yes"] else found[:2]
        status, headers, body = bundle(shown, last_updated="2026-10-20T00:00:00Z")
        data = orjson.loads(body)
        data["total"] = len(found)
        return status, headers, orjson.dumps(data)

    fake.routes["/fhir/Observation"] = observations
    return fake


def test_full_resync_whose_search_stops_early_clears_the_mark_and_fails_the_run(world: SyncWorld) -> None:
    fixed = {"yes": False}
    with serve(_stops_early(fixed)) as fake:
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        _set_mark(world, conn, "Observation", OLD_MARK)
        report = run_sync(world, conn, types=["Observation"], full=True)  # the whole job decides the outcome
        obs = report.types["Observation"]
        assert obs.incomplete and obs.fetched == 2
        assert report.status == "failed", report.status  # not "completed": two observations never arrived
        assert "search_incomplete" in report.failed_types["Observation"]
        assert _mark(world, conn, "Observation") is None  # OLD_MARK kept would skip o3 and o4 for good
        fixed["yes"] = True
        again = run_sync(world, conn, types=["Observation"])
    assert again.status == "completed" and again.error is None
    assert again.types["Observation"].fetched == 4 and again.types["Observation"].created == 2


def test_operation_outcome_diagnostics_reach_neither_the_run_error_nor_a_log(
    world: SyncWorld, caplog: pytest.LogCaptureFixture
) -> None:
    binary: dict[str, Any] = {"status": 422}
    fake = _documents_server(binary)
    fake.routes["/fhir/Observation"] = lambda _p, _q: _diagnostics(400, f"bad search for {MARKER}")
    caplog.set_level(logging.DEBUG)
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        with pytest.raises(FhirError) as raised:
            sync_type(world, conn, "Observation")
        docs = sync_type(world, conn, "DocumentReference")
    assert MARKER not in str(raised.value)  # the run's error is logged and shown in Dagster's event log
    assert str(raised.value).endswith("answered HTTP 400 (issues: error invalid)")  # what, not the server's words
    assert docs.attachments_failed == 1
    logged = [r.getMessage() + str(r.__dict__.get("args")) for r in caplog.records]
    assert logged and not [line for line in logged if MARKER in line]
