"""The block's fast check (``warehouse/_vector_checks.py``) never lands a line the line path would not land, or
with other keys; and it does pass the ordinary lines it exists for (a check that sent every line to the slow
path would keep the outcome right and silently lose the speed)."""

from __future__ import annotations

import inspect
import random
import sys
from collections.abc import Iterator

import orjson
import pyarrow as pa
import pytest

from warehouse import _vector_checks as vector_checks
from warehouse._lines import LineRejected, parse_line
from warehouse._vector_checks import _msgspec_refuses_orjsons_depth, check_block

TYPE = "Observation"
MAX = 1 << 20
TEMPLATES = [
    {"resourceType": TYPE, "id": "a1", "meta": {"versionId": "3", "lastUpdated": "2026-01-02T03:04:05.678+01:00"}},
    {"resourceType": TYPE, "id": "a2"},
    {"resourceType": TYPE, "id": "a3", "meta": {"lastUpdated": "2026-01-02T03:04:05Z"}},
    {"resourceType": TYPE, "id": "a4", "meta": {"versionId": "9", "tag": [{"code": "x"}]}},
    {  # hex ids and text that look like exponents outside a number: still fast
        "resourceType": TYPE,
        "id": "5e012345-9e12-4e99-8e77-1e2e3e4e5e6e",
        "subject": {"reference": "urn:uuid:1e234567-0e00-4000-8000-000000000001"},
        "code": {"text": "dose 2e100 units; x:4e400"},
        "meta": {"lastUpdated": "2026-01-02T03:04:05Z"},
    },
    {
        "resourceType": TYPE,
        "id": "a5",
        "meta": {"lastUpdated": "2025-12-31T23:59:59.999999-05:00"},
        "valueQuantity": {"value": 12.5e3, "unit": "mg", "n": -7, "big": 123456789012345678},
        "note": [{"text": 'Zürich \u00e9\u4e2d \\ " / \t end'}],
        "flags": [True, False, None, [], {}],
    },
]
_ALPHABET = list(b'{}[]":,.-+eE0123456789 \t\\u/nultrfasIN\x00\x7f\xc3\xa9\xed\xa0\x80\xff')


def _keys(raw: bytes) -> tuple[str, object, object] | None:
    try:
        got = parse_line(raw, TYPE)
    except LineRejected:
        return None
    return got.id, got.last_updated, got.version_id


def _fast(lines: list[bytes]) -> list[tuple[str, object, object] | None]:
    rows = check_block(pa.array(lines, pa.large_binary()), TYPE, MAX)
    fast = rows.fast.to_pylist()
    ids, lus, vids = rows.ids.to_pylist(), rows.last_updated.to_pylist(), rows.version_ids.to_pylist()
    return [(ids[i], lus[i], vids[i]) if fast[i] else None for i in range(len(lines))]


def _mutate(rng: random.Random, line: bytes) -> bytes:
    data = bytearray(line)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        op = rng.randrange(3)
        if op == 0 and at < len(data):
            del data[at]
        elif op == 1:
            data.insert(at, rng.choice(_ALPHABET))
        elif at < len(data):
            data[at] = rng.choice(_ALPHABET)
    return bytes(data)


def test_ordinary_resources_are_fast_with_the_line_paths_keys() -> None:
    lines = [orjson.dumps(t) for t in TEMPLATES]
    assert _fast(lines) == [_keys(raw) for raw in lines]
    assert all(k is not None for k in _fast(lines))


@pytest.mark.parametrize("seed", range(8))
def test_mutated_lines_are_never_fast_where_the_line_path_disagrees(seed: int) -> None:
    rng = random.Random(seed)
    base = [orjson.dumps(t) for t in TEMPLATES]
    lines = [_mutate(rng, rng.choice(base)) for _ in range(1500)]
    fast = _fast(lines)
    for raw, got in zip(lines, fast, strict=True):
        if got is not None:
            assert got == _keys(raw), raw
    assert sum(k is not None for k in fast) > 100, "the fast check passed almost nothing"


@pytest.fixture(params=[None, 5000, 20000], ids=["default-recursion-limit", "raised-5000", "raised-20000"])
def recursion_limit(request: pytest.FixtureRequest) -> Iterator[int]:
    """The interpreter's recursion limit during a test: msgspec's depth limit follows it, orjson's does not."""
    before = sys.getrecursionlimit()
    if request.param is not None:
        sys.setrecursionlimit(request.param)
    try:
        yield sys.getrecursionlimit()
    finally:
        sys.setrecursionlimit(before)


@pytest.mark.parametrize("depth", [500, 900, 990, 1000, 1022, 1023, 1024, 1025, 1100, 2000, 4000])
@pytest.mark.parametrize("shape", ["arrays", "objects", "under-meta"])
def test_nesting_near_orjsons_limit_is_never_fast_where_orjson_refuses(
    depth: int, shape: str, recursion_limit: int
) -> None:
    inner = {
        "arrays": b"[" * depth + b"]" * depth,
        "objects": b'{"a":' * depth + b"1" + b"}" * depth,
        "under-meta": b'{"x":' + b"[" * depth + b"]" * depth + b"}",
    }[shape]
    key = "meta" if shape == "under-meta" else "v"
    line = b'{"resourceType":"Observation","id":"deep","' + key.encode() + b'":' + inner + b"}"
    (got,) = _fast([line])
    assert got is None or got == _keys(line)


def test_brackets_are_counted_only_where_msgspec_would_take_what_orjson_refuses(recursion_limit: int) -> None:
    """At CPython's default limit msgspec refuses first, so blocks skip the bracket count (its speed); a process
    that raised the limit gets the count (its safety, checked above)."""
    assert _msgspec_refuses_orjsons_depth() is (recursion_limit <= 1000)


@pytest.mark.parametrize(
    "number",
    [b"1e400", b"-1E+309", b"1" * 250 + b"e99", b"9" * 400, b"1.5e308", b"1e-0400", b"0." + b"0" * 500 + b"1"],
)
def test_numbers_that_may_overflow_a_double_are_left_to_the_line_path(number: bytes) -> None:
    for line in (
        b'{"resourceType":"Observation","id":"n","v":' + number + b"}",
        b'{"resourceType":"Observation","id":"n","v" :\t' + number + b"}",
        b'{"resourceType":"Observation","id":"n","v":[ 1 ,\n' + number + b" ]}",
    ):
        (got,) = _fast([line])
        assert got is None or got == _keys(line), line


_EDGE_LINES = [
    b'{"resourceType":"Observation","id":"deep","v":' + b"[" * depth + b"]" * depth + b"}"
    for depth in (1021, 1022, 1023, 1024, 1025, 1026)
]


def _sweep(headroom: int) -> tuple[bool, list[tuple[str, object, object] | None]]:
    """At a recursion limit of this frame's depth + ``headroom``: the probe's verdict here and the fast keys."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + headroom)
    try:
        return _msgspec_refuses_orjsons_depth(), _fast(_EDGE_LINES)
    finally:
        sys.setrecursionlimit(before)


def test_the_depth_probe_holds_at_every_recursion_limit_near_orjsons_depth() -> None:
    """Where msgspec's budget ends within a few levels of orjson's 1,024, the probe (one frame deeper than the
    decode loop) must never vouch for a line orjson refuses. The limit is swept across that edge, and the sweep
    must see the probe change its verdict, or it would not be testing the edge (pytest's own frames vary)."""
    verdicts = set()
    for headroom in range(990, 1110):
        refused, fast = _sweep(headroom)
        verdicts.add(refused)
        for line, got in zip(_EDGE_LINES, fast, strict=True):
            assert got is None or got == _keys(line), (headroom, line[:60])
    assert verdicts == {True, False}


def test_a_limit_raised_while_a_block_decodes_still_keeps_deep_lines_off_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The limit is the whole interpreter's: another thread may raise it after the probe. Simulated by raising
    it at the block's first decode; the deep line must then be counted out after the loop."""
    real = vector_checks._DECODE
    before = sys.getrecursionlimit()

    def decode_then_raise(raw: bytes) -> object:
        if raw is not vector_checks._DEPTH_PROBE:
            sys.setrecursionlimit(max(before, 5000))
        return real(raw)

    monkeypatch.setattr(vector_checks, "_DECODE", decode_then_raise)
    deep = b'{"resourceType":"Observation","id":"deep","v":' + b"[" * 1100 + b"]" * 1100 + b"}"
    try:
        got = _fast([orjson.dumps(TEMPLATES[1]), deep])
    finally:
        sys.setrecursionlimit(before)
    assert got[1] is None
    assert got[0] == _keys(orjson.dumps(TEMPLATES[1]))
