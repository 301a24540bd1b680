"""A landed file's ``rows + quarantined`` is exactly the file's non-blank lines, what a Bulk manifest's ``count``
is compared with (BDX-20: engine/bulk_fetch.fetch_file fetches a short file again from this count).

The cases put blank lines, whitespace-only lines, CRLF and a missing last newline on every side of a read-block
boundary (landing's ``READ_BYTES`` made tiny), in plain and gzip files, and compare with ``iter_ndjson_lines``.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from connectors.bulk.ndjson import iter_ndjson_lines
from warehouse import LandingZone, _blocks, land_ndjson_file

_PIECES = [b'{"resourceType":"Observation","id":"a"}', b"", b" ", b"\t \r", b"\x0b\x0c", b"\r", b"x", b" y "]
_PIECES += [b'{"a":"\\n"}', b"\xc3\xa9", b'{"resourceType":"Observation","id":"b"}\r']


def _lines(path: Path, zone: LandingZone, seq: int) -> int:
    landed = land_ndjson_file(
        zone, path, connection_id="c1", resource_type="Observation", run_id="r1", source="s", seq=seq
    )
    return landed.rows + landed.quarantined


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (b"\n\n\n", 0),
        (b" \n\t\n\r\n", 0),
        (b"a", 1),
        (b"a\n", 1),
        (b"a\r\n\r\nb", 2),
        (b"\na\n \nb\n\n", 2),
        (b"   a   ", 1),
    ],
)
def test_small_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, expected: int) -> None:
    path = tmp_path / "f.ndjson"
    path.write_bytes(data)
    zone = LandingZone(tmp_path / "zone")
    for n, block in enumerate((1, 2, 3, 7, 2 * 1024 * 1024)):
        monkeypatch.setattr(_blocks, "READ_BYTES", block)
        assert _lines(path, zone, n) == expected, block


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_random_files_match_the_line_reader_at_every_block_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, gz: bool
) -> None:
    """BDX-20: the count a short file is fetched again by is the file's non-blank lines, wherever blocks end."""
    rng = random.Random(seed)
    lines = [rng.choice(_PIECES) * rng.randint(1, 3) for _ in range(rng.randint(1, 60))]
    data = b"\n".join(lines) + rng.choice([b"", b"\n", b"\r\n", b" "])
    path = tmp_path / "f.ndjson"
    path.write_bytes(gzip.compress(data) if gz else data)
    expected = sum(1 for _ in iter_ndjson_lines(path))
    zone = LandingZone(tmp_path / "zone")
    for n, block in enumerate((1, 2, 3, 5, 8, 13, 64, 2 * 1024 * 1024)):
        monkeypatch.setattr(_blocks, "READ_BYTES", block)
        assert _lines(path, zone, n) == expected, (seed, block)
