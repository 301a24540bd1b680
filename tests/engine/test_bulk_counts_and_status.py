"""Bulk exports against a scripted server (issue 10): a file short of its manifest ``count`` holds ``_since``
(BDX-20/14), a proxy's bare 5xx while polling is a hiccup not a failed job (BDX-09), and the server's
OperationOutcome diagnostics reach neither the run's error nor the logs (its issue codes do)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from engine import cursors, run_bulk_export
from tests.engine.fake_fhir import FakeFhir, Reply, serve
from tests.engine.helpers import SyncWorld, connect_static

TX = "2026-10-20T10:00:00Z"
STREAM = cursors.bulk_stream("group", "g1")
MARKER = "PHI-MARKER-Jane-Doe-1970"
#: Epic's system for its numbered error codes (sent in an issue's ``details.coding``).
EPIC_ERRORS = "urn:oid:1.2.840.114350.1.13.0.1.7.2.657369"


def _res(rtype: str, rid: str) -> bytes:
    return orjson.dumps({"resourceType": rtype, "id": rid, "meta": {"lastUpdated": "2026-10-19T00:00:00Z"}})


def _ndjson(lines: list[bytes]) -> Reply:
    return 200, {"Content-Type": "application/fhir+ndjson"}, b"".join(line + b"\n" for line in lines)


def _server(status_answers: list[Reply] | None = None, obs_count: int = 3) -> FakeFhir:
    """A group export: ``status_answers`` are given in turn before the manifest; Observation counts ``obs_count``."""
    fake = FakeFhir()
    queue = list(status_answers or [])

    def status(_p: str, _q: dict[str, list[str]]) -> Reply:
        if queue:
            return queue.pop(0)
        files = f"{fake.base_url}/bulk/files"
        manifest: dict[str, Any] = {
            "transactionTime": TX,
            "request": f"{fake.fhir_base}/Group/g1/$export",
            "requiresAccessToken": True,
            "output": [
                {"type": "Patient", "url": f"{files}/p.ndjson", "count": 2},
                {"type": "Observation", "url": f"{files}/o.ndjson", "count": obs_count},
            ],
            "error": [],
        }
        return 200, {"Content-Type": "application/json"}, orjson.dumps(manifest)

    fake.routes.update(
        {
            "/fhir/Group/g1/$export": lambda _p, _q: (202, {"Content-Location": f"{fake.base_url}/bulk/status/j"}, b""),
            "GET /bulk/status/j": status,
            "DELETE /bulk/status/j": lambda _p, _q: (202, {}, b""),
            "/bulk/files/p.ndjson": lambda _p, _q: _ndjson([_res("Patient", "p1"), _res("Patient", "p2")]),
            "/bulk/files/o.ndjson": lambda _p, _q: _ndjson([_res("Observation", f"o{i}") for i in (1, 2, 3)]),
        }
    )
    return fake


def _connect(world: SyncWorld, fake: FakeFhir) -> str:
    return connect_static(world, fake.fhir_base, kind="group", group_id="g1", scope="system/*.rs")


def test_file_cut_at_a_line_boundary_is_fetched_again_then_holds_since_bdx20(world: SyncWorld) -> None:
    """Issue 10: a body that stops right after a newline passes every byte check; only the manifest's ``count``
    shows lines are missing. The file is fetched again (3 attempts), then its type holds ``_since`` (partial)."""
    fake = _server(obs_count=4)  # the server counted 4 Observations; every body stops after the third line
    with serve(fake):
        conn = _connect(world, fake)
        first = run_bulk_export(world.env, conn, "short")
        assert fake.hits("/bulk/files/o.ndjson") == 3, "fetched again like a truncation, a bounded number of times"
        assert first.status == "partial" and first.incomplete_types == ["Observation"], first.error
        assert first.error is not None and "bulk_export_incomplete" in first.error and "Observation" in first.error
        assert first.types["Observation"].created == 3 and first.types["Patient"].created == 2, "arrivals merged"
        assert first.count_mismatches == [f"{fake.base_url}/bulk/files/o.ndjson: manifest count 4, file had 3 lines"]
        assert cursors.get_mark(world.env.db, conn, STREAM, "*") is None, "_since never passes data not received"

        fake.routes["/bulk/files/o.ndjson"] = lambda _p, _q: _ndjson(
            [_res("Observation", f"o{i}") for i in range(1, 5)]
        )
        second = run_bulk_export(world.env, conn, "whole")
    assert second.status == "completed", second.error
    assert "_since" not in fake.query_of("/fhir/Group/g1/$export")[1], "the next export asks again from the held mark"
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is not None
    with world.env.warehouse() as wh:
        assert wh.live_ids(conn, "Observation") == {"o1", "o2", "o3", "o4"}


def test_file_short_once_is_fetched_again_and_the_export_completes_bdx20(world: SyncWorld) -> None:
    fake = _server(obs_count=3)
    served = {"n": 0}

    def flaky(_p: str, _q: dict[str, list[str]]) -> Reply:
        served["n"] += 1
        ids = (1, 2) if served["n"] == 1 else (1, 2, 3)  # the first body ends cleanly after two lines
        return _ndjson([_res("Observation", f"o{i}") for i in ids])

    fake.routes["/bulk/files/o.ndjson"] = flaky
    with serve(fake):
        conn = _connect(world, fake)
        report = run_bulk_export(world.env, conn, "refetched")
    assert report.status == "completed", report.error
    assert served["n"] == 2 and report.count_mismatches == [] and report.types["Observation"].created == 3
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is not None


@pytest.mark.parametrize(
    "answer",
    [
        (502, {}, b""),  # a proxy's bare Bad Gateway
        (503, {}, b""),  # unavailable without Retry-After
        (504, {"Content-Type": "text/html"}, b"<html>Gateway Timeout</html>"),
        (408, {}, b""),
        (500, {}, b""),  # no OperationOutcome: nothing says the job failed
    ],
    ids=["502", "503", "504", "408", "500-bare"],
)
def test_proxy_error_while_polling_is_a_hiccup_not_a_failed_job_bdx09(world: SyncWorld, answer: Reply) -> None:
    """Issue 10: one 502/503/504/408 from infrastructure while polling is transient (connectors.errors'
    ``is_transient_answer``): polling goes on at the same URL and the export completes, nothing is cancelled early."""
    fake = _server(status_answers=[answer, answer])
    with serve(fake):
        conn = _connect(world, fake)
        report = run_bulk_export(world.env, conn, "through-proxy")
    assert report.status == "completed", report.error
    assert fake.hits("/fhir/Group/g1/$export") == 1, "no second kick-off"
    assert fake.hits("/bulk/status/j", method="DELETE") == 1, "DELETEd once, after landing (BDX-11)"


def test_500_with_a_fatal_outcome_is_a_failed_job_and_is_deleted_bdx09(world: SyncWorld) -> None:
    """BDX-09: a 500 whose OperationOutcome reports a non-transient fatal issue is the server failing the job."""
    failed = {"resourceType": "OperationOutcome", "issue": [{"severity": "fatal", "code": "exception"}]}
    fake = _server(status_answers=[(500, {"Content-Type": "application/fhir+json"}, orjson.dumps(failed))])
    with serve(fake):
        conn = _connect(world, fake)
        report = run_bulk_export(world.env, conn, "server-failed")
    assert report.status == "failed" and report.error is not None and "bulk_export_error" in report.error
    assert "HTTP 500" in report.error and "exception" in report.error
    assert fake.hits("/bulk/status/j", method="DELETE") == 1, "an abandoned job is cancelled (BDX-11)"
    assert fake.hits("/bulk/files/p.ndjson") == 0


def test_kickoff_diagnostics_reach_neither_the_run_error_nor_a_log_record(
    world: SyncWorld, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10: OperationOutcome diagnostics and details text may echo PHI: the run's error (logged, shown in
    Dagster) keeps the issue's severity, code, expression and ``details.coding`` codes (Epic numbers its errors)."""
    coding = {"system": EPIC_ERRORS, "code": "59008", "display": f"no such patient {MARKER}"}
    issue = {"severity": "error", "code": "invalid", "diagnostics": f"unknown patient {MARKER}"}
    issue |= {"expression": ["Parameters.parameter[0]"], "details": {"coding": [coding], "text": MARKER}}
    outcome = {"resourceType": "OperationOutcome", "issue": [issue]}
    fake = _server()
    body = orjson.dumps(outcome)
    fake.routes["/fhir/Group/g1/$export"] = lambda _p, _q: (400, {"Content-Type": "application/fhir+json"}, body)
    caplog.set_level(logging.DEBUG)
    with serve(fake):
        conn = _connect(world, fake)
        report = run_bulk_export(world.env, conn, "refused")
    assert report.status == "failed" and report.error is not None
    assert "bulk kick-off failed" in report.error and MARKER not in report.error
    said = f"HTTP 400 (issues: error invalid at Parameters.parameter[0] [{EPIC_ERRORS}|59008])"
    assert report.error.endswith(said), report.error
    assert any("bulk kick-off failed" in r.getMessage() for r in caplog.records), "the failure is still logged"
    leaked = [r.getMessage() for r in caplog.records if MARKER in r.getMessage() or MARKER in str(r.__dict__)]
    assert leaked == []
