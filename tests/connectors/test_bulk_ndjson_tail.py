"""The truncation check of a bulk file whose last line has no newline (BDX-20): a server may leave the final newline
out, and that last resource may be large (an inline attachment). Reading it back must stay linear and bounded."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import orjson
import pytest

from connectors.bulk import ndjson
from connectors.bulk.ndjson import truncation_of

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
