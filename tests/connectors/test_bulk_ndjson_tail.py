"""The truncation check of a bulk file whose last line has no newline (BDX-20): a server may leave the final newline
out, and that last resource may be large (an inline attachment). Reading it back must stay linear and bounded."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import orjson
import pytest

from connectors.bulk import BulkClient, ndjson
from connectors.bulk.ndjson import UTF8_BOM, truncation_of, verify_ndjson_file
from tests.connectors.helpers import recording_policy
from tests.connectors.scripted import Scripted, send

_FIRST = b'{"resourceType":"Binary","id":"a"}\n'


def _binary(size: int) -> bytes:
    return orjson.dumps({"resourceType": "Binary", "id": "b", "data": "A" * size})


def _check(path: Path) -> tuple[str | None, int]:
    """``truncation_of`` of ``path`` and the most memory Python held while it ran."""
    tracemalloc.start()
    try:
        verdict = truncation_of(path, path.stat().st_size, None)
        return verdict, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("cut", [False, True], ids=["whole", "cut"])
def test_a_last_line_over_the_limit_is_never_held_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: bool
) -> None:
    """BDX-20: a last line longer than any resource landing stores is left to landing, which quarantines it with its
    size; before, it was read whole into memory (a 10 GiB one-line file: 10 GiB), prepending block to block
    (quadratic: 95 s for 128 MB)."""
    monkeypatch.setattr(ndjson, "LAST_LINE_LIMIT", 1024 * 1024, raising=False)
    body = _binary(24 * 1024 * 1024)
    path = tmp_path / "f.ndjson"
    path.write_bytes(_FIRST + (body[: len(body) // 2] if cut else body))
    verdict, peak = _check(path)
    assert verdict is None
    assert peak < 8 * 1024 * 1024, f"{peak} bytes held for a last line over a 1 MiB limit"


def test_a_long_last_line_within_the_limit_is_still_judged(tmp_path: Path) -> None:
    """Lines of many read blocks are put back together in order: a whole one passes, a cut one is named."""
    body = _binary(3 * 1024 * 1024 + 12345)
    path = tmp_path / "f.ndjson"
    path.write_bytes(_FIRST + body)
    assert _check(path)[0] is None
    path.write_bytes(_FIRST + body[:-7])
    assert "middle of a resource" in (_check(path)[0] or "")
    path.write_bytes(body + b"\r")  # a single line, no newline at all, a CR after it
    assert _check(path)[0] is None


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip-encoded"])
def test_a_one_resource_file_with_a_byte_order_mark_and_no_final_newline_is_whole_bdx20(
    server: tuple[str, Scripted], tmp_path: Path, gzipped: bool
) -> None:
    """BDX-20: a leading BOM (a .NET writer's default) and a missing final newline are each tolerated, so both at once
    must be: the BOM was read as part of the last line, which then was no JSON, and the file was fetched again as
    truncated, then failed every run (bulk_file_truncated) though every byte had arrived."""
    base, script = server
    body = UTF8_BOM + orjson.dumps({"resourceType": "Patient", "id": "p1"})
    wire, headers = (gzip.compress(body), {"Content-Encoding": "gzip"}) if gzipped else (body, {})
    script.actions = [send(200, wire, headers) for _ in range(3)]  # a retry would be served the same
    bulk = BulkClient(f"{base}/fhir", None, retry=recording_policy([]))  # type: ignore[arg-type]
    dest = bulk.download(f"{base}/files/Patient.ndjson", tmp_path / "p.ndjson", requires_token=False)
    assert dest.read_bytes() == body and len(script.seen) == 1
    assert verify_ndjson_file(dest, "Patient", 1).problems == []
