"""A batch run whose landing disk fills up stops there, naming the disk (every later member would meet it too).

The full disk is simulated at the one call that writes a landing file's bytes (``ParquetWriter.write_table``, which
on a real full disk raises ``OSError`` errno ENOSPC with no file name; the writer names the file:
``warehouse.LandingDiskFullError``). Before, the member that met it went on to each of its later types, and the
batch to each later member, every one searching the EHR and failing on the same disk in turn; a Bulk download's
free-space check (``InsufficientDiskSpaceError``) stopped the member but not the batch either.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from connectors.errors import InsufficientDiskSpaceError
from engine import cursors, runs
from engine.connection_sync import PATIENT_TYPES
from engine.references import REFERENCED_TYPES
from sandbox import SandboxConfig, SandboxServer
from tests.engine.helpers import connect_patient, sandbox_patients
from tests.engine.test_batch_runs import batch_after_first
from warehouse import LandingDiskFullError, LandingError

_FULL = "landing_disk_full"


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_: Any, **__: Any) -> Any:
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)


def test_a_full_landing_disk_stops_the_batch_naming_it(world, http, request_log, monkeypatch) -> None:
    with SandboxServer(SandboxConfig(patients=3, seed=11)) as sb:
        ids = sorted(connect_patient(world, sb, http=http, patient_id=p) for p in sandbox_patients(http, sb)[:3])
        first, rest = ids[0], ids[1:]
        _disk_full(monkeypatch)
        result, stopped, _ = batch_after_first(world, ids, request_log)
        fhir = f"{sb.base_url}/fhir/"
    db, landing = world.env.db, Path(world.env.zone.root)
    said = stopped.error or ""
    assert "LandingDiskFullError" in said and "the disk is full" in said and str(landing / first) in said, said
    # the member stopped at its first type: no later type searched, no later member tried
    searched = {str(u).removeprefix(fhir).split("?")[0].split("/")[0] for u in request_log.urls if fhir in str(u)}
    assert searched <= {PATIENT_TYPES[0], "metadata"}, searched
    for cid in rest:
        row = runs.get(db, result.sync_run_ids[cid])
        assert row is not None and row.status == "failed", row
        assert row.error is not None and row.error.startswith("not tried: the landing disk is full"), row.error
        assert _FULL in row.error and first in row.error and str(landing) in row.error, row.error
        assert row.started_at is None and row.counts == {}, row
        assert cursors.get_mark(db, cid, cursors.REST_STREAM, "Patient") is None
    assert not [p.name for p in landing.rglob(".*.tmp")], "a partial landing file was left behind"


@pytest.mark.parametrize(
    ("failure", "stops"),
    [
        (LandingDiskFullError("the disk is full: could not write landing file /l/c/Patient/x.parquet"), True),
        (InsufficientDiskSpaceError("only 1 bytes free under /l, below the 512-byte reserve"), True),
        (LandingError("could not write landing file x.parquet: permission denied"), False),
        (OSError("not the landing disk"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_what_stops_a_batch(failure: BaseException, stops: bool) -> None:
    """A landing disk too full (a landing file's write refused, a download's free-space check) stops the batch;
    another landing failure is the member's type's own."""
    from engine.batch_stop import stops_batch

    assert (stops_batch(failure) is not None) is stops


def test_a_full_landing_disk_met_reading_references_stops_the_batch_too(world, http, request_log, monkeypatch) -> None:
    """The disk fills up at the member's last step, reading its references (``engine.references``): that step
    caught a ``LandingDiskFullError`` per referenced type as the type's own failure, so the member went on into
    each later referenced type and the batch into each later member, every one searching the EHR and failing on
    the same disk. Now it stops there as a clinical type's landing does: one referenced type searched, the later
    members not tried (their rows ``not tried: the landing disk is full``), the references left queued."""
    real = pq.ParquetWriter.write_table

    def full_for_references(self: pq.ParquetWriter, *args: Any, **kwargs: Any) -> Any:
        if set(Path(str(self.where)).parts) & set(REFERENCED_TYPES):
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        return real(self, *args, **kwargs)

    with SandboxServer(SandboxConfig(patients=2, seed=11)) as sb:
        ids = sorted(connect_patient(world, sb, http=http, patient_id=p) for p in sandbox_patients(http, sb)[:2])
        first, later = ids
        monkeypatch.setattr(pq.ParquetWriter, "write_table", full_for_references)
        result, stopped, _ = batch_after_first(world, ids, request_log)
        fhir = f"{sb.base_url}/fhir/"
    said = stopped.error or ""
    assert "LandingDiskFullError" in said and "the disk is full" in said, said
    searched = [str(u).removeprefix(fhir).split("?")[0].split("/")[0] for u in request_log.urls if fhir in str(u)]
    assert len({t for t in searched if t in REFERENCED_TYPES}) == 1, searched
    row = runs.get(world.env.db, result.sync_run_ids[later])
    assert row is not None and row.status == "failed", row
    assert row.error is not None and row.error.startswith("not tried: the landing disk is full"), row.error
    assert cursors.queued_references(world.env.db, first), "the references not read must stay queued"
