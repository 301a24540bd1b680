"""A sync that finds nothing new writes no landing file and leaves the warehouse untouched (issue 14).

The marks still move to the server's clock of the (complete, empty) search, so the next search asks for even
less; a change after that is landed and merged as usual (deletes: test_incremental's BDX-31 test).
"""

from __future__ import annotations

from pathlib import Path

from engine import cursors, runs
from tests.engine.helpers import connect_patient, mutate
from tests.engine.job_runs import run_sync

TYPES = ["Patient", "Encounter", "Observation"]


def _landing_files(world, connection_id: str) -> set[Path]:
    return set((Path(world.env.zone.root) / connection_id).rglob("*.parquet"))


def _marks(world, connection_id: str) -> dict[str, object]:
    return {t: cursors.get_mark(world.env.db, connection_id, cursors.REST_STREAM, t) for t in TYPES}


def _warehouse_file_state(world) -> tuple[int, int]:
    path = Path(world.env.warehouse_target)
    return path.stat().st_mtime_ns, path.stat().st_size


def test_nothing_new_lands_no_file_opens_no_warehouse_write_and_moves_marks(start_sandbox, world, http):
    sb = start_sandbox(patients=1)
    conn = connect_patient(world, sb, http=http)
    first = run_sync(world, conn, types=TYPES)
    assert first.status == "completed", first.error
    files, marks = _landing_files(world, conn), _marks(world, conn)
    assert files and all(marks.values())
    with world.env.warehouse() as wh:
        rows = wh.row_fingerprint()
    warehouse_file = _warehouse_file_state(world)

    quiet = run_sync(world, conn, types=TYPES)
    assert quiet.status == "completed", quiet.error
    assert all(quiet.types[t].files == 0 and quiet.types[t].fetched == 0 for t in TYPES), quiet.types
    assert _landing_files(world, conn) == files  # no new landing file, not even an empty one
    assert _warehouse_file_state(world) == warehouse_file  # no write transaction reached the DuckDB file
    moved = _marks(world, conn)
    assert all(moved[t] >= marks[t] for t in TYPES)  # type: ignore[operator]
    assert runs.get(world.env.db, quiet.run_id).status == "completed"  # type: ignore[union-attr]

    assert mutate(http, sb, create=2)["created"]  # new vital signs (Observations)
    after = run_sync(world, conn, types=TYPES)
    assert after.status == "completed", after.error
    landed = sum(after.types[t].files for t in TYPES)
    assert 0 < landed == len(_landing_files(world, conn) - files)
    assert sum(after.types[t].updated + after.types[t].created for t in TYPES) > 0
    with world.env.warehouse() as wh:
        assert wh.row_fingerprint() != rows
