"""``count_ndjson_lines`` (the manifest ``count`` check, BDX-20) counts exactly what the line reader yields.

The count reads the file a block at a time; these cases put blank lines, whitespace-only lines, CRLF and a missing
last newline on every side of a block boundary, and compare with ``iter_ndjson_lines`` (the line reader).
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from connectors.bulk.ndjson import count_ndjson_lines, iter_ndjson_lines

_PIECES = [b'{"id":"a"}', b"", b" ", b"\t \r", b"\x0b\x0c", b"\r", b"x", b'{"a":"\\n"}', b" y ", b"\xc3\xa9"]


def _write(path: Path, data: bytes, *, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


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
def test_small_files(tmp_path: Path, data: bytes, expected: int) -> None:
    path = _write(tmp_path / "f.ndjson", data)
    for block in (1, 2, 3, 7, 1024 * 1024):
        assert count_ndjson_lines(path, block=block) == expected, block


@pytest.mark.parametrize("seed", range(40))
def test_random_files_match_the_line_reader_at_every_block_size(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    lines = [rng.choice(_PIECES) * rng.randint(1, 3) for _ in range(rng.randint(0, 60))]
    data = b"\n".join(lines) + rng.choice([b"", b"\n", b"\r\n", b" "])
    path = _write(tmp_path / "f.ndjson", data)
    expected = sum(1 for _ in iter_ndjson_lines(path))
    for block in (1, 2, 3, 5, 8, 13, 64, 1024 * 1024):
        assert count_ndjson_lines(path, block=block) == expected, (seed, block)


def test_gzip_files_are_counted_after_decompression(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.ndjson.gz", b'{"id":"a"}\n\n \n{"id":"b"}\n', gz=True)
    assert count_ndjson_lines(path, block=4) == 2
