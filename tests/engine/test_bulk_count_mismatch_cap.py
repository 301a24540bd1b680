"""A run's report names at most 100 files whose line count differs from the manifest's (BDX-20) and counts them
all: an export may list up to EHRSYNC_BULK_MAX_FILES files, and naming each one in the run's report (and the
Dagster check metadata built from it) was ~3 MB per run at 20,000. A scripted server over a real socket."""

from __future__ import annotations

import orjson

from engine import run_bulk_export
from engine.reports import MAX_NAMED_MISMATCHES
from tests.engine.fake_fhir import FakeFhir, Reply, group_export, serve
from tests.engine.helpers import SyncWorld, connect_static

FILES = MAX_NAMED_MISMATCHES + 3


def _file(n: int) -> Reply:
    """Two Patients where the manifest counts one: more than counted lands and is a mismatch, not a fetch again."""
    lines = [orjson.dumps({"resourceType": "Patient", "id": f"p{n}-{k}"}) + b"\n" for k in (1, 2)]
    return 200, {"Content-Type": "application/fhir+ndjson"}, b"".join(lines)


def _server() -> FakeFhir:
    return group_export([str(n) for n in range(FILES)], lambda name: _file(int(name)), "2026-10-20T10:00:00Z")


def test_a_run_names_at_most_100_files_whose_count_is_off_and_counts_them_all_bdx20(world: SyncWorld) -> None:
    fake = _server()
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, kind="group", group_id="g1", scope="system/*.rs")
        report = run_bulk_export(world.env, conn, "counts")
    assert report.status == "completed", report.error
    assert report.types["Patient"].created == 2 * FILES, "every resource landed"
    assert report.count_mismatched == FILES
    assert len(report.count_mismatches) == MAX_NAMED_MISMATCHES
    named = report.named_count_mismatches()
    assert named[-1] == "and 3 more"
    assert named[0].endswith(": manifest count 1, file had 2 lines")
