"""A landing file whose disk is full fails with ``LandingDiskFullError`` naming the file and its folder (Arrow's
``OSError`` names neither), deletes what it half wrote and leaves an earlier landing of the same name as it was.

The disk is really full: the writer's temporary file is a link to ``/dev/full``, where every write fails ENOSPC
(the kernel's answer, not a patched call), whether the first row group or the footer meets it."""

from __future__ import annotations

import errno
import uuid
from pathlib import Path
from typing import Any

import pytest

from warehouse import LandingDiskFullError, LandingZone
from warehouse import landing as landing_module

_DEV_FULL = Path("/dev/full")
_TOKEN = "0123456789ab"


def _observation(i: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"o{i}", "status": "final", "code": {"text": "x" * 200}}


@pytest.mark.parametrize("batch_rows", [1, 10_000], ids=["a-row-group-midway", "the-footer-at-finish"])
def test_a_full_disk_is_named_and_nothing_half_written_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int
) -> None:
    assert _DEV_FULL.exists()
    zone = LandingZone(tmp_path / "landing", batch_rows=batch_rows)
    final = zone.path_for("c1", "Observation", "run-1", "s1")
    final.parent.mkdir(parents=True)
    final.write_bytes(b"an earlier landing")
    tmp = final.with_name(f".{final.name}.{_TOKEN}.tmp")
    tmp.symlink_to(_DEV_FULL)
    monkeypatch.setattr(landing_module.uuid, "uuid4", lambda: uuid.UUID(_TOKEN + "0" * 20))
    source = "https://ehr.example/fhir/Observation"
    with (
        pytest.raises(LandingDiskFullError) as raised,
        zone.writer("c1", "Observation", "run-1", source, seq="s1") as writer,
    ):
        for i in range(50):
            writer.add_resource(_observation(i))
    said = str(raised.value)
    assert said.startswith(f"the disk is full: could not write landing file {final} (No space left on device)")
    assert f"free space under {final.parent}" in said, said
    assert isinstance(raised.value.__cause__, OSError) and raised.value.__cause__.errno == errno.ENOSPC
    assert raised.value.code == "landing_disk_full"
    assert not tmp.is_symlink() and not tmp.exists()  # the half-written file is deleted
    assert final.read_bytes() == b"an earlier landing"


def test_a_rename_refused_for_room_is_a_full_disk_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The finished file's rename into place can be refused ENOSPC (its folder needs a new block). Before, that was a
    bare ``OSError`` outside the writer's mapping and clean-up: the half-landed temporary file stayed behind. The
    kernel cannot be made to refuse a rename here without mounting a filesystem, so this one rename raises what it
    would; every write before it is real."""
    zone = LandingZone(tmp_path / "landing")
    final = zone.path_for("c1", "Observation", "run-1", "s1")
    real_replace = Path.replace

    def refused(self: Path, target: Any) -> Path:
        if Path(target) == final:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", refused)
    with (
        pytest.raises(LandingDiskFullError, match="the disk is full: could not write landing file"),
        zone.writer("c1", "Observation", "run-1", "https://ehr.example/fhir/Observation", seq="s1") as writer,
    ):
        writer.add_resource(_observation(1))
    assert not final.exists()
    assert [p.name for p in final.parent.iterdir()] == []  # no temporary file left behind
