"""Block landing (issue 14) gives exactly what the line path gives: same rows in the same order, same quarantine
rows (line numbers, reasons, raw bytes), whatever the lines hold and wherever the read blocks split them."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from tests.warehouse.conftest import resource
from warehouse import LandingZone, land_ndjson_file
from warehouse import _blocks as blocks
from warehouse.landing import LandingWriter
from warehouse.limits import QUARANTINE_PREFIX_BYTES

LIMIT = 1024
_DRAIN = 1024 * 1024


def _obs(rid: str, **meta: Any) -> bytes:
    res: dict[str, Any] = {"resourceType": "Observation", "id": rid}
    if meta:
        res["meta"] = meta
    return orjson.dumps(res)


def _padded(rid: str, size: int) -> bytes:
    """A valid resource of exactly ``size`` bytes."""
    head = b'{"resourceType":"Observation","id":"' + rid.encode() + b'","note":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


TRICKY: list[bytes] = [
    _obs("a", lastUpdated="2026-01-01T00:00:00Z", versionId="1"),
    b"",
    b"   ",
    b"  " + _obs("spaced") + b" \t",
    _obs("crlf") + b"\r",
    _obs("crcr") + b"\r\r",
    b"not json",
    b'{"resourceType":"Observation","id":"tc",}',
    b'{"resourceType":"Observation","id":"nan","v":NaN}',
    b'{"resourceType":"Observation","id":"inf","v":-Infinity}',
    b'{"resourceType":"Observation","id":"big","v":1e400}',
    b'{"resourceType":"Observation","id":"bigint","v":123456789012345678901234567890}',
    b"[1,2]",
    b'{"resourceType":"Observation","id":"tab","v":"x\ty"}',
    b'{"resourceType":"Observation","id":"rawnul","v":"\x00"}',
    b"{'resourceType':'Observation','id':'quotes'}",
    b'{"resourceType":"Observation","id":"comment",/*c*/"v":1}',
    b'{"resourceType":"Observation","id":"arraycomma","v":[1,]}',
    b'{"resourceType":"Observation","id":"tiny","v":-1e-400}',
    b'{"resourceType":"Observation","id":"overlong","v":"\xc0\xaf"}',
    b'"a string"',
    _obs("x").replace(b"Observation", b"Patient"),
    b'{"resourceType":"Observation"}',
    b'{"resourceType":"Observation","id":""}',
    b'{"resourceType":"Observation","id":5}',
    b'{"resourceType":"Observation","id":null}',
    b'{"resourceType":5,"id":"rt5"}',
    b'{"resourceType":"Observation","id":"m1","meta":"x"}',
    b'{"resourceType":"Observation","id":"m2","meta":null}',
    b'{"resourceType":"Observation","id":"m3","meta":{}}',
    b'{"resourceType":"Observation","id":"m4","meta":{"versionId":3}}',
    b'{"resourceType":"Observation","id":"m5","meta":{"versionId":null,"lastUpdated":null}}',
    b'{"resourceType":"Observation","id":"m6","meta":{"lastUpdated":5}}',
    _obs("lu1", lastUpdated="2026-01-01"),
    _obs("lu2", lastUpdated="2026-01-01T00:00:00"),
    _obs("lu3", lastUpdated="2021-02-29T00:00:00Z"),
    _obs("lu4", lastUpdated="2026-01-01T00:00:00.1234567Z"),
    _obs("lu5", lastUpdated="2026-01-01T00:00:00.5+05:30"),
    _obs("lu6", lastUpdated="2026-01-01T24:00:00Z"),
    _obs("lu7", lastUpdated="2026-01-01T23:59:60Z"),
    _obs("lu8", lastUpdated="0002-01-01T00:00:00+23:59"),
    _obs("lu9", lastUpdated="9999-12-31T23:59:59-01:00"),
    _obs("lu10", lastUpdated="2026-01-01T00:00:00+0100"),
    _obs("lu11", lastUpdated="2026-01-01T00:00:00.Z"),
    _obs("lu12", lastUpdated="2026-01-01T00:00:00-00:00"),
    _obs("lu13", lastUpdated="2026-01-01 00:00:00Z"),
    b'{"resourceType":"Observation","id":"d1","id":"d2"}',
    b'{"resourceType":"Observation","id":"d3","meta":{"lastUpdated":"2026-01-01T00:00:00Z",'
    b'"lastUpdated":"2027-01-01T00:00:00Z"}}',
    b'{"resourceType":"Observation","id":"nul","v":"a\\u0000b"}',
    b'{"resourceType":"Observation","id":"escnul","v":"a\\\\u0000b"}',
    b'{"resourceType":"Observation","id":"bad\xff\xfeutf8"}',
    b'{"resourceType":"Observation","id":"sur\\ud800"}',
    b'{"resourceType":"Observation","id":"pair\\ud83d\\ude00"}',
    b'{"resourceType":"Observation","id":"esc\\u0041"}',
    b'{"resourceType":"Observation","id":"two"} {"resourceType":"Observation","id":"three"}',
    b'{"resourceType":"Observation","id":"deep","v":' + b"[" * 1030 + b"]" * 1030 + b"}",
    b'{"resourceType":"Observation","id":"deepok","v":' + b"[" * 500 + b"]" * 500 + b"}",
    # what msgspec (the block's parser) skips unread but orjson (the line path's) rejects or reads otherwise
    b'{"resourceType":"Observation","id":"bigmant","v":' + b"1" * 250 + b"e99}",
    b'{"resourceType":"Observation","id":"bigdigits","v":' + b"9" * 400 + b"}",
    b'{"resourceType":"Observation","id":"e99","v":1e99}',
    b'{"resourceType":"Observation","id":"e308","v":1.5E+308}',
    b'{"resourceType":"Observation","id":"e309","v":1.8e308}',
    b'{"resourceType":"Observation","id":"e0400","v":1e-0400}',
    b'{"resourceType":"Observation","id":"spaced-e400","v" : 1e400}',
    b'{"resourceType":"Observation","id":"array-e400","v":[ 1 , -2.5E+400 ]}',
    b'{"resourceType":"Observation","id":"5e012345-9e12-4e99","ref":"urn:uuid:1e234567"}',
    b'{"resourceType":"Observation","id":"skipbadkey","\xff":1}',
    b'{"resourceType":"Observation","id":"skipsur","v":"\xed\xa0\x80"}',
    b'{"resourceType":"Observation","id":"skipbig","v":"\xf4\x90\x80\x80"}',
    b'{"resourceType":"Observation","i\\u0064":"escid"}',
    b'{"resourceType":"Observation","id":"d4","id":5}',
    b'{"resourceType":"Observation","id":5,"id":"d5"}',
    b'{"resourceType":"Observation","id":"m7","meta":{"versionId":"1","lastUpdated":"2026-01-01T00:00:00Z"},'
    b'"meta":{"versionId":"2"}}',
    b'{"resourceType":"Observation","id":"m8","meta":{"versionId":"1"},"m\\u0065ta":{"lastUpdated":"2026-01-01T00:00:00Z"}}',
    b'{"resourceType":"Observation","id":"m9","meta":{"versionId":"1","tag":[{"code":"x"}]},"meta":null}',
    b'{"resourceType":"Observation","id":"nested","v":{"id":"inner","resourceType":"Patient","meta":5}}',
    _obs("lu14", lastUpdated="2026-01-01T00:00:00z"),
    _obs("a", lastUpdated="2025-01-01T00:00:00Z"),  # a duplicate id: both rows land, in file order
    _padded("size1024", LIMIT),
    _padded("size1025", LIMIT + 1),
    _padded("size1026", LIMIT + 2),
    _padded("size1024crlf", LIMIT) + b"\r",
    _padded("size1023crlf", LIMIT - 1) + b"\r",
    _padded("huge", 3 * _DRAIN + 17),
    _padded("hugecrlf", 2 * _DRAIN) + b"\r",
    _obs("after-huge"),
]


def _line_path(path: Path, tmp: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The reference: the line-by-line reader and checks that landed Bulk files before issue 14."""
    out = tmp / "ref.parquet"
    with (
        path.open("rb") as fh,
        LandingWriter(
            out,
            connection_id="c1",
            resource_type="Observation",
            run_id="r1",
            source="s",
            tenant_id=None,
            transaction_time=None,
            max_resource_bytes=LIMIT,
        ) as w,
    ):
        limit = LIMIT + 2
        while line := fh.readline(limit):
            if len(line) < limit or line.endswith(b"\n"):
                w.add_line(line)
                continue
            prefix, size = line[:QUARANTINE_PREFIX_BYTES], len(line)
            while chunk := fh.readline(_DRAIN):
                if chunk.endswith(b"\n"):
                    size += len(chunk.rstrip(b"\r\n"))
                    break
                size += len(chunk)
            w.add_oversize_line(prefix, size)
    return _tables(w.result.path, w.result.quarantine_path)


def _tables(path: Path, quarantine: Path | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = pq.read_table(path).drop_columns(["source", "run_id"]).to_pylist()
    q = pq.read_table(quarantine).drop_columns(["source", "run_id"]).to_pylist() if quarantine else []
    return rows, q


@pytest.mark.parametrize("read_bytes", [blocks.READ_BYTES, 4096, 997])
@pytest.mark.parametrize("last_newline", [True, False])
def test_block_landing_matches_the_line_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_bytes: int, last_newline: bool
) -> None:
    monkeypatch.setattr(blocks, "READ_BYTES", read_bytes)
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"\n".join([*TRICKY, *TRICKY[:5]]) + (b"\n" if last_newline else b""))
    zone = LandingZone(tmp_path / "zone", max_resource_bytes=LIMIT, batch_rows=7, block_landing=True)
    landed = land_ndjson_file(zone, src, connection_id="c1", resource_type="Observation", run_id="r1", source="s")
    want_rows, want_q = _line_path(src, tmp_path)
    got_rows, got_q = _tables(landed.path, landed.quarantine_path)
    assert [r["id"] for r in got_rows] == [r["id"] for r in want_rows]
    assert got_rows == want_rows
    # block landing hashes a fast line as read and a line the line path took as stripped: each as it is stored
    assert all(r["content_hash"] == hashlib.sha256(r["resource_json"].encode()).hexdigest() for r in got_rows)
    assert [(q["line_number"], q["error"]) for q in got_q] == [(q["line_number"], q["error"]) for q in want_q]
    assert got_q == want_q
    assert landed.rows == len(want_rows) and landed.quarantined == len(want_q) > 20


def test_a_last_line_over_the_limit_without_newline(tmp_path: Path) -> None:
    src = tmp_path / "in.ndjson"
    src.write_bytes(_obs("first") + b"\n" + _padded("last", LIMIT + 2))
    zone = LandingZone(tmp_path / "zone", max_resource_bytes=LIMIT, block_landing=True)
    landed = land_ndjson_file(zone, src, connection_id="c1", resource_type="Observation", run_id="r1", source="s")
    assert _tables(landed.path, landed.quarantine_path) == _line_path(src, tmp_path)


def test_gzip_and_many_blocks_land_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocks, "READ_BYTES", 1000)
    lines = [orjson.dumps(resource(f"o{i}", f"2026-01-01T00:00:{i % 60:02d}Z")) for i in range(500)]
    lines[250] = b"{broken"
    src = tmp_path / "in.ndjson"
    src.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    zone = LandingZone(tmp_path / "zone", batch_rows=64, block_landing=True)
    landed = land_ndjson_file(zone, src, connection_id="c1", resource_type="Observation", run_id="r1", source="s")
    rows, q = _tables(landed.path, landed.quarantine_path)
    assert [r["id"] for r in rows] == [f"o{i}" for i in range(500) if i != 250]
    assert [(x["line_number"], x["raw_line"]) for x in q] == [(251, b"{broken")]
    assert max(pq.ParquetFile(landed.path).metadata.row_group(i).num_rows for i in range(8)) <= 64
