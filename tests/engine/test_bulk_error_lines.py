"""Bulk ``error`` files with lines that are not OperationOutcomes (BDX-22), through the production engine over real
sockets (sandbox fault ``bulk_error_unreadable``): a line we cannot read may name a type that failed, so the export
is held incomplete (``_since`` stays) while the rest of its data lands, and the run says which file and how many
lines.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from connectors.bulk import WHOLE_EXPORT
from engine import cursors, run_bulk_export
from engine.bulk_special import outcome_lines
from sandbox import SandboxServer
from tests.engine.helpers import SyncWorld, add_fault, connect_backend

GROUP = "grp0"
STREAM = cursors.bulk_stream("group", GROUP)


def _live(world: SyncWorld, connection_id: str) -> dict[str, int]:
    with world.env.warehouse() as wh:
        return {r["resource_type"]: r["live"] for r in wh.summary() if r["connection_id"] == connection_id}


@pytest.mark.parametrize(
    "error_line",
    [None, "not json at all", '{"resourceType": "Bundle", "type": "collection"}'],
    ids=["cut-mid-line", "not-json", "json-not-an-outcome"],
)
def test_an_unreadable_error_line_holds_since_and_the_rest_lands_bdx22(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, error_line: str | None
) -> None:
    """The line in place of the fatal outcome for Observation used to be only counted as quarantined (not JSON) or
    to stop the file with a traceback-like InvalidInputError (JSON of another shape); ``_since`` moved past the
    Observations that never arrived, or the job could not finish."""
    sb = shared_sb
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "bulk_error_unreadable", resource_type="Observation", error_line=error_line, path="/fhir/Group")
    first = run_bulk_export(world.env, conn, "unreadable")
    assert first.status == "partial" and first.incomplete_types == [WHOLE_EXPORT], first.error
    assert first.error is not None and "bulk_export_incomplete" in first.error
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is None, "_since never passes data not received"
    outcomes = first.types["OperationOutcome"]
    assert outcomes.quarantined == 1
    (warning,) = outcomes.warnings
    assert "error file" in warning and "/bulk/files/" in warning and "1 line(s)" in warning and "line 1" in warning
    live = _live(world, conn)
    assert live.get("Patient") == 2 and live.get("Condition") and not live.get("Observation"), live

    second = run_bulk_export(world.env, conn, "after-fault")
    assert second.status == "completed", second.error
    assert second.types["Observation"].created > 0, "the next export asks again and gets the missing type"
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") == second.transaction_time


def test_error_rows_and_warnings_name_the_lines_of_the_servers_file_bdx22(world: SyncWorld, tmp_path: Path) -> None:
    """A blank or unusable line before an outcome used to shift every number after it: ``fhir_errors.line_number``
    counted the outcomes kept (and the warning counted non-blank lines), so an operator looking up line 2 of the
    server's file found the wrong outcome."""
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing"}]}
    path = tmp_path / "error.ndjson"
    lines = [orjson.dumps({**outcome, "id": "a"}), b"", b"not json", orjson.dumps({**outcome, "id": "b"})]
    path.write_bytes(b"\n".join(lines) + b"\n")
    unusable: list[int] = []
    with world.env.warehouse() as wh:
        counts = wh.record_errors("c1", "r1", "error-file", outcome_lines(path, unusable))
        with wh._read() as cur:
            cur.execute("SELECT line_number, outcome FROM fhir_errors ORDER BY line_number")
            rows = [(n, orjson.loads(text)["id"]) for n, text in cur.fetchmany(10)]
    assert counts.outcomes == 2
    assert unusable == [3], "the unusable line is named by its number in the file, blank lines counted"
    assert rows == [(1, "a"), (4, "b")]
