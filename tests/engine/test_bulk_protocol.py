"""Bulk export against a scripted server: manifest handling, error/deleted files, counts, ``_since``, tokens
(BDX-09..22). The sandbox tests cover the same flow end to end; this one pins exact numbers per file."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from engine import cursors, run_bulk_export
from tests.engine.fake_fhir import FakeFhir, Reply, serve
from tests.engine.helpers import connect_static
from warehouse.duckdb_backend import DuckDBWarehouse

TX = "2026-10-20T10:00:00Z"


def _ndjson(*lines: object) -> Reply:
    body = b"\n".join(x if isinstance(x, bytes) else orjson.dumps(x) for x in lines) + b"\n"
    return 200, {"Content-Type": "application/fhir+ndjson"}, body


def _scripted(requires_token: bool = True, error_type: str = "OperationOutcome") -> FakeFhir:
    fake = FakeFhir()
    polls = {"n": 0}

    def kickoff(_p: str, _q: dict[str, list[str]]) -> Reply:
        return 202, {"Content-Location": f"{fake.base_url}/bulk/status/job1"}, b""

    def status(_p: str, _q: dict[str, list[str]]) -> Reply:
        polls["n"] += 1
        if polls["n"] == 1:
            return 202, {"X-Progress": "working", "Retry-After": "0"}, b""
        files = f"{fake.base_url}/bulk/files"
        manifest = {
            "transactionTime": TX,
            "request": f"{fake.fhir_base}/Group/g1/$export",
            "requiresAccessToken": requires_token,
            "output": [
                {"type": "Patient", "url": f"{files}/p.ndjson", "count": 2},
                {"type": "Observation", "url": f"{files}/o.ndjson", "count": 2},  # 3 lines: more is a warning
            ],
            "error": [{"type": error_type, "url": f"{files}/e.ndjson"}],
            "deleted": [{"type": "Bundle", "url": f"{files}/d.ndjson"}],
            "extension": {"https://example.org/x": True},
            "unknownField": 1,
        }
        return 200, {"Content-Type": "application/json"}, orjson.dumps(manifest)

    def res(rtype: str, rid: str) -> dict[str, Any]:
        return {"resourceType": rtype, "id": rid, "meta": {"lastUpdated": "2026-10-19T00:00:00Z"}}

    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]}
    warning = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "informational"}]}
    deleted = {
        "resourceType": "Bundle",
        "type": "transaction",
        "meta": {"lastUpdated": "2026-10-18T00:00:00Z"},
        "entry": [{"request": {"method": "DELETE", "url": "Observation/o9"}}],
    }
    fake.routes.update(
        {
            "/fhir/Group/g1/$export": kickoff,
            "GET /bulk/status/job1": status,
            "DELETE /bulk/status/job1": lambda _p, _q: (202, {}, b""),
            "/bulk/files/p.ndjson": lambda _p, _q: _ndjson(res("Patient", "p1"), res("Patient", "p2")),
            "/bulk/files/o.ndjson": lambda _p, _q: _ndjson(
                res("Observation", "o1"), b'{"resourceType": "Observation", "id": "o2"', res("Patient", "wrong")
            ),
            "/bulk/files/e.ndjson": lambda _p, _q: _ndjson(outcome, warning),
            "/bulk/files/d.ndjson": lambda _p, _q: _ndjson(deleted),
        }
    )
    return fake


def test_export_lands_counts_quarantines_and_advances_since(world):
    with serve(_scripted()) as fake:
        conn = connect_static(world, fake.fhir_base, kind="group", group_id="g1", scope="system/*.rs")
        report = run_bulk_export(world.env, conn, "run-1")
        assert report.status == "completed", report.error
        second = run_bulk_export(world.env, conn, "run-2")
    tx = datetime(2026, 10, 20, 10, tzinfo=UTC)
    assert report.transaction_time == tx and report.files == 4
    assert report.types["Patient"].created == 2
    obs = report.types["Observation"]
    assert (obs.created, obs.quarantined, obs.deleted) == (1, 2, 1)  # truncated line + wrong type; o9 tombstoned
    assert report.count_mismatches == [f"{fake.base_url}/bulk/files/o.ndjson: manifest count 2, file had 3 lines"]
    assert (report.error_files, report.error_outcomes) == (1, 2)
    assert report.error_issues == {"information": 1, "warning": 1}  # BDX-22: metadata, the export is complete
    assert cursors.get_mark(world.env.db, conn, cursors.bulk_stream("group", "g1"), "*") == tx
    # BDX-11, once per export: two group exports plus the second run's id-only membership export (BDX-15)
    assert fake.hits("/bulk/status/job1", method="DELETE") == 3
    kickoffs = fake.query_of("/fhir/Group/g1/$export")
    assert "_since" not in kickoffs[0] and kickoffs[1]["_since"] == ["2026-10-20T10:00:00Z"]  # BDX-14
    assert kickoffs[2]["_elements"] == ["id"] and kickoffs[2]["_type"] == ["Patient"] and "_since" not in kickoffs[2]
    assert (second.new_members, second.removed_members) == (0, 0)  # p1, p2 already landed by the first export
    assert second.status == "completed" and second.types["Patient"].unchanged == 2
    with world.env.warehouse() as wh:
        assert wh.live_ids(conn, "Observation") == {"o1"}


@pytest.mark.parametrize("requires_token", [True, False])
def test_file_requests_carry_the_token_only_when_required_bdx16(world, requires_token):
    with serve(_scripted(requires_token)) as fake:
        conn = connect_static(world, fake.fhir_base, kind="group", group_id="g1", scope="system/*.rs")
        assert run_bulk_export(world.env, conn, "run").status == "completed"
    file_auth = [a for (p, _), a in zip(fake.requests, fake.authorized, strict=True) if p.startswith("/bulk/files/")]
    assert len(file_auth) == 4 and set(file_auth) == {requires_token}


def test_status_url_that_keeps_answering_404_fails_the_run_without_looping_bdx08(world):
    fake = _scripted()
    fake.routes["GET /bulk/status/job1"] = lambda _p, _q: (404, {}, b"")
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, kind="group", group_id="g1", scope="system/*.rs")
        report = run_bulk_export(world.env, conn, "run")
    assert report.status == "failed" and "404" in (report.error or "")
    assert fake.hits("/fhir/Group/g1/$export") == world.env.bulk_max_reruns + 1
    assert cursors.get_mark(world.env.db, conn, cursors.bulk_stream("group", "g1"), "*") is None


@pytest.mark.parametrize("gone", [404, 410])
def test_a_status_url_gone_mid_incremental_export_starts_over_from_the_same_since_bdx08(world, gone):
    """A status URL answering 404 or 410 (the server dropped the job) ends it without a manifest: a new export is
    kicked off in the same run with the same ``_since``, never a full export instead, nor a failed run."""
    fake = _scripted()
    status, asked = fake.routes["GET /bulk/status/job1"], {"n": 0}

    def gone_once(path: str, query: dict[str, list[str]]) -> Reply:
        asked["n"] += 1
        return (gone, {}, b"") if asked["n"] == 3 else status(path, query)  # run 1 polled twice

    fake.routes["GET /bulk/status/job1"] = gone_once
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, kind="group", group_id="g1", scope="system/*.rs")
        assert run_bulk_export(world.env, conn, "run-1").status == "completed"
        second = run_bulk_export(world.env, conn, "run-2")
    assert second.status == "completed" and second.reruns == 1, second.error
    kickoffs = [q for q in fake.query_of("/fhir/Group/g1/$export") if "_elements" not in q]  # not BDX-15's
    assert [q.get("_since") for q in kickoffs] == [None, [TX], [TX]]


def test_slow_downloads_give_the_warehouse_back_to_other_writers(world):
    """DuckDB admits one writer process. While an export waits on a slow file, another connection's sync must
    be able to write: the export lets go of the warehouse after ``bulk_idle_release_s`` without a file."""
    fake = _scripted()
    slow_file_started, other_wrote = threading.Event(), threading.Event()
    timed_out: list[bool] = []
    fast = fake.routes["/bulk/files/o.ndjson"]

    def slow(path: str, query: dict[str, list[str]]) -> Reply:
        slow_file_started.set()
        timed_out.append(not other_wrote.wait(15))  # answer only once the other writer got its turn
        return fast(path, query)

    fake.routes["/bulk/files/o.ndjson"] = slow
    world.env.bulk_idle_release_s = 0.2
    world.env.bulk_concurrency = 1  # files one after another: the slow one comes after others were merged
    other = DuckDBWarehouse(world.env.warehouse_target, lock_timeout_s=10)

    def other_writer() -> None:
        assert slow_file_started.wait(15)
        other.tombstone("another-connection", "Patient", ["x"], datetime.now(UTC))
        other_wrote.set()

    writer = threading.Thread(target=other_writer)
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, kind="group", group_id="g1", scope="system/*.rs")
        writer.start()
        report = run_bulk_export(world.env, conn, "run")
    writer.join(20)
    other.close()
    assert report.status == "completed", report.error
    assert timed_out == [False], "the other writer waited for the whole export"


@pytest.mark.parametrize(
    ("issue", "expected"),
    [
        (
            {"severity": "fatal", "code": "exception", "details": {"text": "failed to export Observation"}},
            "Observation",
        ),
        ({"severity": "error", "code": "processing", "expression": ["Patient.name"]}, "Patient"),
        ({"severity": "error", "code": "processing", "diagnostics": "server fault"}, "*"),  # unattributable
    ],
)
def test_error_outcome_makes_the_run_partial_and_holds_since_bdx22(world, issue, expected):
    """Issue 10: ``error``/``fatal`` outcomes in an error file mean missing data for the types they name."""
    fake = _scripted()
    failed = orjson.dumps({"resourceType": "OperationOutcome", "issue": [issue]}) + b"\n"
    fake.routes["/bulk/files/e.ndjson"] = lambda _p, _q: (200, {"Content-Type": "application/fhir+ndjson"}, failed)
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, kind="group", group_id="g1", scope="system/*.rs")
        report = run_bulk_export(world.env, conn, "run-1")
        fake.routes["/bulk/files/e.ndjson"] = lambda _p, _q: _ndjson()
        again = run_bulk_export(world.env, conn, "run-2")
    assert report.status == "partial" and report.incomplete_types == [expected]
    assert report.types["Patient"].created == 2, "what arrived is merged"
    assert "_since was not advanced" in (report.error or "")
    assert again.status == "completed", again.error
    kickoffs = fake.query_of("/fhir/Group/g1/$export")
    assert "_since" not in kickoffs[0] and "_since" not in kickoffs[1], "the second export starts from the held mark"
    assert cursors.get_mark(world.env.db, conn, cursors.bulk_stream("group", "g1"), "*") is not None


@pytest.mark.parametrize(("error_type", "expected"), [("OperationOutcome", "*"), ("Observation", "Observation")])
def test_an_unreadable_error_line_holds_the_files_types_bdx22(world, error_type, expected):
    """A line of an error file that is no OperationOutcome may have named a failed type: the types the file's
    manifest item names (all, for ``OperationOutcome``) are held incomplete, beside the warning it also holds. It
    used to be only counted as quarantined while ``_since`` moved on."""
    fake = _scripted(error_type=error_type)
    warning = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "informational"}]}
    fake.routes["/bulk/files/e.ndjson"] = lambda _p, _q: _ndjson(warning, b"not json")
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, kind="group", group_id="g1", scope="system/*.rs")
        report = run_bulk_export(world.env, conn, "run-1")
    assert report.status == "partial" and report.incomplete_types == [expected], report.error
    assert (report.error_outcomes, report.error_issues) == (1, {"warning": 1}), "the readable outcome is recorded"
    assert report.types["OperationOutcome"].quarantined == 1  # the unparseable error line, counted not dropped
    assert "e.ndjson" in report.types["OperationOutcome"].warnings[0]
    assert report.types["Patient"].created == 2, "what arrived is merged"
    assert cursors.get_mark(world.env.db, conn, cursors.bulk_stream("group", "g1"), "*") is None
