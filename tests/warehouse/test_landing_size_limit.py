"""``land_ndjson_file(max_bytes=...)``: a file holding more than the limit lands nothing, and a gzip one is inflated no
further than the limit (BDX-17). Landing inflated a stored ``.ndjson.gz`` whole, however far it inflated: 1 MB of
gzipped zeros is 1 GiB."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import orjson
import pytest

from tests.inflation import count_inflated
from tests.warehouse.conftest import resource
from warehouse import LandingError, LandingFileTooLargeError, LandingZone, land_ndjson_file

SRC = "https://ehr.example/bulk/Observation-1.ndjson"
LIMIT = 2 * 1024 * 1024


def _land(zone: LandingZone, path: Path, max_bytes: int | None, block: bool = True) -> int:
    zone.block_landing = block
    landed = land_ndjson_file(
        zone, path, connection_id="c1", resource_type="Observation", run_id="r1", source=SRC, max_bytes=max_bytes
    )
    return landed.rows


def _bomb(lines: bytes, nul_bytes: int) -> bytes:
    """``lines`` then ``nul_bytes`` of NUL, as gzip (~1000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    parts = [packer.compress(lines)] + [packer.compress(bytes(1024 * 1024)) for _ in range(nul_bytes >> 20)]
    return b"".join([*parts, packer.flush()])


@pytest.mark.parametrize("block", [True, False], ids=["blocks", "lines"])
def test_bdx17_a_gzip_inflating_past_the_limit_lands_nothing_and_stops_there(
    zone: LandingZone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: bool
) -> None:
    lines = b"".join(orjson.dumps(resource(f"o{i}")) + b"\n" for i in range(50))
    path = tmp_path / "bomb.ndjson"
    path.write_bytes(_bomb(lines, 256 * 1024 * 1024))
    assert path.stat().st_size < 1024 * 1024
    inflated = count_inflated(monkeypatch)
    with pytest.raises(LandingFileTooLargeError, match=rf"bomb\.ndjson .*past the {LIMIT}-byte limit"):
        _land(zone, path, LIMIT, block)
    assert 0 < max(inflated.values()) <= LIMIT + 4, "inflated no further than the limit (and the BOM probe)"
    assert not list(zone.root.rglob("*.parquet")), "nothing landed"


def test_bdx17_files_within_the_limit_land_and_a_plain_one_over_it_is_refused_unread(
    zone: LandingZone, tmp_path: Path
) -> None:
    body = b"".join(orjson.dumps(resource(f"o{i}")) + b"\n" for i in range(300))
    plain, packed = tmp_path / "plain.ndjson", tmp_path / "packed.ndjson"
    plain.write_bytes(body)
    packed.write_bytes(gzip.compress(body))
    for path in (plain, packed):
        assert _land(zone, path, len(body)) == 300
        assert _land(zone, path, None) == 300
        with pytest.raises(LandingFileTooLargeError):
            _land(zone, path, len(body) - 1)
    with pytest.raises(LandingError, match=rf"plain\.ndjson holds {len(body)} bytes"):
        _land(zone, plain, 1000)
