"""Landing reads each file into one reused buffer (``warehouse/_blocks._ReadBuffer``, issue 14). Rows stay held
across blocks until their row group is written (``BlockLandingWriter._group``), so a block's lines must never
point into that buffer: every landed row is compared here with its source line, with the buffer refilled many
times while a row group is still open, from plain, gzip and readinto-less readers."""

from __future__ import annotations

import gzip
import io
import random
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from warehouse import LandingZone, land_ndjson_file
from warehouse import _blocks as blocks

LIMIT = 4096


def _source(seed: int) -> list[bytes]:
    """Distinct resources of varied lengths (a line written over by the next read shows), some CRLF, one longer
    than a read (the buffer grows to hold it, then shrinks) and one over the limit (the over-long line's drain
    hands the buffer what it read past it)."""
    rng = random.Random(seed)
    lines = []
    for i in range(1500):
        note = "".join(rng.choices("abcdefghij", k=rng.randint(0, 900)))
        lines.append(orjson.dumps({"resourceType": "Observation", "id": f"o{i}", "note": note}))
    lines[300] = orjson.dumps({"resourceType": "Observation", "id": "long", "note": "z" * (LIMIT - 100)})
    lines[700] = orjson.dumps({"resourceType": "Observation", "id": "huge", "note": "y" * (3 * LIMIT)})
    return lines


def _landed(path: Path, tmp_path: Path, batch_rows: int) -> list[str]:
    zone = LandingZone(tmp_path / f"zone-{path.name}", max_resource_bytes=LIMIT, batch_rows=batch_rows)
    landed = land_ndjson_file(zone, path, connection_id="c1", resource_type="Observation", run_id="r1", source="s")
    meta = pq.ParquetFile(landed.path).metadata
    assert meta.num_row_groups > 1  # rows were held while the buffer was read into again
    return [str(v) for v in pq.read_table(landed.path).column("resource_json").to_pylist()]


@pytest.mark.parametrize("read_bytes", [997, 4096, 65536])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_every_landed_row_is_its_source_line_while_row_groups_span_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_bytes: int, gz: bool
) -> None:
    monkeypatch.setattr(blocks, "READ_BYTES", read_bytes)
    lines = _source(read_bytes)
    ends = [b"\r\n" if i % 7 == 0 else b"\n" for i in range(len(lines))]
    data = b"".join(line + end for line, end in zip(lines, ends, strict=True))
    path = tmp_path / "in.ndjson"
    path.write_bytes(gzip.compress(data) if gz else data)
    want = [line.decode() for line in lines if b'"huge"' not in line]
    assert _landed(path, tmp_path, batch_rows=400) == want


class _ReadOnly:
    """A reader with ``read`` only (no ``readinto``), as a caller's own file-like object may be."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._inner.read(min(size, 333))  # short reads, too


def test_a_reader_without_readinto_gives_the_same_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocks, "READ_BYTES", 1000)
    lines = _source(1)
    data = b"\n".join(lines) + b"\nlast"
    got: list[bytes] = []
    for item in blocks.read_blocks(_ReadOnly(data), LIMIT + 2):  # type: ignore[arg-type]
        if isinstance(item, blocks.Oversize):
            got.append(b"<over %d>" % item.size)
        else:
            got.extend(item.lines.to_pylist())
    want = [b"<over %d>" % len(line) if len(line) > LIMIT else line for line in [*lines, b"last"]]
    assert got == want
