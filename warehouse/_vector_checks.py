"""The per-line landing checks of ``warehouse/_lines.py``, set-based over a block of lines (issue 14).

Arrow's multi-threaded JSON reader parses the block with explicit columns (``resourceType``, ``id``, ``meta``'s
``versionId`` and ``lastUpdated`` as strings; nothing is type-inferred) and Arrow compute checks them. The block
decides only which lines are certainly fine (*fast*) and their keys; every other line goes through
``_lines.parse_line`` one by one, which gives the verdict and the exact reason as before. The fast test is
therefore stricter than the Python one wherever the two parsers could disagree: a line Arrow's reader rejects (or
whose columns have another JSON type, or that holds a checked key twice) makes its half of the block be retried
alone, down to single lines that then take the Python path; NaN/Infinity, ``\\u0000`` escapes, nesting near
orjson's depth limit, instants outside a conservative pattern take the Python path directly.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

__all__ = ["FastRows", "check_block"]

_TS = pa.timestamp("us", tz="UTC")
_COLUMNS = pa.schema(
    [
        ("resourceType", pa.string()),
        ("id", pa.string()),
        ("meta", pa.struct([("versionId", pa.string()), ("lastUpdated", pa.string())])),
    ]
)
_PARSE = pj.ParseOptions(explicit_schema=_COLUMNS, unexpected_field_behavior="ignore")
_READ = pj.ReadOptions(block_size=1 << 20, use_threads=False)
# FHIR instants that Arrow's cast reads exactly as ``_lines.parse_instant`` does (anything else: Python decides).
_INSTANT = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
# Text orjson rejects or ``reject_nul_escape`` quarantines, but Arrow's reader might take.
_SUSPECT = r"NaN|Infinity|\\u0000"
# orjson stops at 1,024 levels of nesting; a line shorter than this cannot have 1,000 brackets.
_DEEP_BYTES = 2000
_DEEP_BRACKETS = 1000
_NEWLINE = pa.scalar(b"\n", pa.large_binary())


@dataclass(frozen=True)
class FastRows:
    """Per line of a block: ``fast`` (lands with these keys) and the keys (null where not fast)."""

    fast: pa.BooleanArray
    ids: pa.Array
    version_ids: pa.Array
    last_updated: pa.Array


def _candidates(lines: pa.Array, max_bytes: int) -> pa.BooleanArray:
    """Lines that look like one JSON object within the size limit and hold nothing suspect."""
    length = pc.binary_length(lines)
    mask = pc.and_(
        pc.and_(pc.starts_with(lines, pattern=b"{"), pc.ends_with(lines, pattern=b"}")),
        pc.less_equal(length, max_bytes),
    )
    mask = pc.and_(mask, pc.invert(pc.match_substring_regex(lines, pattern=_SUSPECT)))
    long = pc.greater_equal(length, _DEEP_BYTES)
    if pc.any(long).as_py():
        brackets = pc.subtract(
            length,
            pc.binary_length(pc.replace_substring(pc.replace_substring(lines, "[", ""), "{", "")),
        )
        mask = pc.and_(mask, pc.invert(pc.and_(long, pc.greater_equal(brackets, _DEEP_BRACKETS))))
    return mask


def _parse(lines: pa.Array, resource_type: str) -> pa.Table:
    """Parse and check ``lines``; raises ``pa.ArrowInvalid`` when any line is not simply fine."""
    lines.cast(pa.large_string())  # raises on a line that is not UTF-8
    whole = pa.LargeListArray.from_arrays(pa.array([0, len(lines)], pa.int64()), lines)
    joined = pc.binary_join(whole, _NEWLINE)
    table = pj.read_json(io.BytesIO(joined[0].as_buffer()), read_options=_READ, parse_options=_PARSE)
    if table.num_rows != len(lines):
        raise pa.ArrowInvalid("a line held more or less than one JSON value")
    meta = table.column("meta").combine_chunks()
    lu = meta.field("lastUpdated")
    rid = table.column("id").combine_chunks()
    good = pc.and_(pc.equal(table.column("resourceType").combine_chunks(), resource_type), pc.not_equal(rid, ""))
    lu_ok = pc.or_(
        pc.is_null(lu),
        pc.and_(
            pc.match_substring_regex(lu, pattern=_INSTANT),
            pc.and_(pc.greater_equal(lu, "0002"), pc.less(lu, "9999")),
        ),
    )
    good = pc.fill_null(pc.and_(good, lu_ok), False)
    if not pc.all(good).as_py():
        raise pa.ArrowInvalid("a line failed a check")
    return pa.table(
        {"id": rid, "version_id": meta.field("versionId"), "last_updated": lu.cast(_TS)},
    )


def _checked(lines: pa.Array, resource_type: str) -> list[tuple[int, int, pa.Table | None]]:
    """``(start, stop, keys)`` runs covering ``lines``: keys of a run that passed, None for single lines that
    did not (halving a run that failed, so one bad line costs a few re-parses, not the block)."""
    runs: list[tuple[int, int, pa.Table | None]] = []
    todo = [(0, len(lines))]
    while todo:
        start, stop = todo.pop()
        try:
            runs.append((start, stop, _parse(lines.slice(start, stop - start), resource_type)))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if stop - start == 1:
                runs.append((start, stop, None))
            else:
                mid = (start + stop) // 2
                todo += [(mid, stop), (start, mid)]
    runs.sort(key=lambda run: run[0])
    return runs


def check_block(lines: pa.Array, resource_type: str, max_bytes: int) -> FastRows:
    """The fast lines of ``lines`` (a binary array of whole lines without their line breaks) and their keys."""
    candidate = _candidates(lines, max_bytes)
    idx = pc.indices_nonzero(candidate)
    picked = lines if len(idx) == len(lines) else lines.take(idx)
    n = len(lines)
    ids = pa.nulls(n, pa.string())
    vids = pa.nulls(n, pa.string())
    lus = pa.nulls(n, _TS)
    fast = pa.array([False] * n, pa.bool_())
    parts: list[pa.Table] = []
    where: list[pa.Array] = []
    for start, stop, keys in _checked(picked, resource_type) if len(picked) else []:
        if keys is not None:
            parts.append(keys)
            where.append(idx.slice(start, stop - start))
    if parts:
        keys = pa.concat_tables(parts).combine_chunks()
        at = pa.concat_arrays(where)
        fast = _scatter(fast, at, pa.array([True] * len(at), pa.bool_()))
        ids = _scatter(ids, at, keys.column("id").chunk(0))
        vids = _scatter(vids, at, keys.column("version_id").chunk(0))
        lus = _scatter(lus, at, keys.column("last_updated").chunk(0))
    return FastRows(fast, ids, vids, lus)


def _scatter(base: pa.Array, at: pa.Array, values: pa.Array) -> pa.Array:
    """``base`` with ``base[at[i]] = values[i]`` (``at`` ascending)."""
    if len(at) == len(base):
        return values
    mask = pc.is_in(pa.array(range(len(base)), pa.int64()), value_set=at.cast(pa.int64()))
    return pc.replace_with_mask(base, mask, values)
