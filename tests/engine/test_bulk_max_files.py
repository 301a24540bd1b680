"""EHRSYNC_BULK_MAX_FILES reaches the Bulk client of a run (``SyncEnvironment.bulk_max_files``): a manifest listing
more files is an invalid manifest naming the variable, refused before a file is fetched or a row stored; the job
ends ``failed`` and is deleted on the EHR, ``_since`` stays, and once the limit is raised the next run lands it all.
A scripted server over a real socket (``tests.engine.fake_fhir``)."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
from sqlalchemy import select

from engine import cursors, run_bulk_export
from engine.models import BulkJob, BulkJobFile
from tests.engine.fake_fhir import FakeFhir, Reply, group_export, serve
from tests.engine.helpers import connect_static, make_environment

TX = "2026-10-20T10:00:00Z"
STREAM = cursors.bulk_stream("group", "g1")
FILES = ("p1", "p2", "p3")


def _file(name: str) -> Reply:
    line = orjson.dumps({"resourceType": "Patient", "id": name, "meta": {"lastUpdated": "2026-10-19T00:00:00Z"}})
    return 200, {"Content-Type": "application/fhir+ndjson"}, line + b"\n"


def _server() -> FakeFhir:
    """A group export whose manifest lists three files of one Patient each."""
    return group_export(list(FILES), _file, TX)


def test_bdx12_a_manifest_over_bulk_max_files_fails_the_run_naming_it_then_lands_once_raised(
    tmp_path: Path, http: httpx.Client
) -> None:
    world = make_environment(tmp_path / "world", http=http, bulk_max_files=2)
    fake = _server()
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, kind="group", group_id="g1", scope="system/*.rs")
        refused = run_bulk_export(world.env, conn, "refused")
        assert refused.status == "failed"
        assert refused.error is not None and "lists 3 files, more than the 2" in refused.error
        assert "raise EHRSYNC_BULK_MAX_FILES" in refused.error
        assert sum(fake.hits(f"/bulk/files/{n}.ndjson") for n in FILES) == 0, "nothing fetched"
        assert fake.hits("/bulk/status/j", "DELETE") == 1, "the job is cancelled on the EHR"
        with world.env.db.session() as session:
            assert session.scalars(select(BulkJob.status)).all() == ["failed"]
            assert session.scalars(select(BulkJobFile.id)).all() == [], "no file row stored"
        assert cursors.get_mark(world.env.db, conn, STREAM, "*") is None, "_since stays"

        world.env.bulk_max_files = 3  # the operator raised EHRSYNC_BULK_MAX_FILES
        landed = run_bulk_export(world.env, conn, "raised")
    assert landed.status == "completed", landed.error
    assert landed.types["Patient"].created == 3
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is not None
