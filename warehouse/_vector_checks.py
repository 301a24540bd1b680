"""The per-line landing checks of ``warehouse/_lines.py``, over a block of lines at a time (issue 14).

Each line that may be simply fine is decoded by msgspec into just the keys landing needs (``resourceType``,
``id``, ``meta.versionId``, ``meta.lastUpdated``, all strings): the rest of the document is validated and
skipped in C, never built into Python objects. Arrow compute checks the keys set-based. On the same blocks this
takes about a third of the CPU of Arrow's JSON reader, which parsed the whole document into columns first
(docs/PERFORMANCE.md, "Issue 14, fifth session").

The block decides only which lines are certainly fine (*fast*) and their keys; every other line goes through
``_lines.parse_line`` one by one, which gives the verdict and the exact reason as before. The fast test is
therefore stricter than orjson wherever the two parsers could disagree: text that is not UTF-8 (msgspec does not
check what it skips), a checked key of another JSON type or ``null``, ``\\u0000`` escapes, a number that could
overflow a double (orjson rejects it, msgspec skips it unread), instants outside a conservative pattern, and
nesting near orjson's 1,024-level limit all take the Python path (``tests/warehouse/test_fast_checks.py``).

Nesting costs nothing to check where msgspec already refuses what orjson would: msgspec's depth limit is the
interpreter's recursion budget, which at CPython 3.11's default (1,000) is below orjson's 1,024 levels. Each block
asks msgspec first (``_msgspec_refuses_orjsons_depth``); only where it would accept a document orjson refuses (a
process that raised its recursion limit, also while the block decoded) are the brackets of long lines counted:
two passes over every block that holds a line of 2,000 bytes or more, measured at ~0.9 s of CPU per 927 MB of
~4.6 KB lines (docs/PERFORMANCE.md, "Issue 14, seventh session").
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["FastRows", "check_block"]

_TS = pa.timestamp("us", tz="UTC")


class _Meta(msgspec.Struct):
    versionId: str | msgspec.UnsetType = msgspec.UNSET
    lastUpdated: str | msgspec.UnsetType = msgspec.UNSET


class _Keys(msgspec.Struct):
    """What landing reads of a resource; duplicate keys resolve as orjson does (the last one wins)."""

    resourceType: str
    id: str
    meta: _Meta | msgspec.UnsetType = msgspec.UNSET


_DECODE = msgspec.json.Decoder(_Keys).decode
# msgspec's nesting limit is Python's recursion limit (a RecursionError), which a process may raise
_NOT_FAST = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
# FHIR instants that Arrow's cast reads exactly as ``_lines.parse_instant`` does (anything else: Python decides;
# a leap second ``:60`` among them, which Python lands as ``:59.999999`` of its minute).
_INSTANT = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
# Text orjson rejects or ``reject_nul_escape`` quarantines, but msgspec might take: a ``\u0000`` escape, and a
# number that may overflow a double (an exponent of 3+ digits, or 200+ integer digits). A JSON number follows a
# key's ``":`` or an array's ``[``/``,``: anchoring there keeps ids such as ``5e012345-...`` on the fast path.
_VALUE = r'("[ \t\r\n]*:|[\[,])[ \t\r\n]*-?'
_SUSPECT = rf"\\u0000|{_VALUE}[0-9]+(\.[0-9]+)?[eE][+-]?[0-9]{{3}}|{_VALUE}[0-9]{{200}}"
# orjson stops at 1,024 levels of nesting; a line shorter than this cannot have 1,000 brackets.
_DEEP_BYTES = 2000
_DEEP_BRACKETS = 1000
# 1,024 levels: one fewer than the first depth orjson refuses, because the probe runs one Python frame deeper
# than the decode loop it vouches for (each frame takes one level of msgspec's budget).
_ORJSON_DEPTH = 1024
_DEPTH_PROBE = b'{"resourceType":"","id":"","v":' + b"[" * (_ORJSON_DEPTH - 1) + b"]" * (_ORJSON_DEPTH - 1) + b"}"


@dataclass(frozen=True)
class FastRows:
    """Per line of a block: ``fast`` (lands with these keys) and the keys (null where not fast); ``hashes`` is the
    hex sha256 of every line as it is (a fast line lands exactly so, ``warehouse/_hashes.py``)."""

    fast: pa.BooleanArray
    ids: pa.Array
    version_ids: pa.Array
    last_updated: pa.Array
    hashes: pa.Array


def _msgspec_refuses_orjsons_depth() -> bool:
    """Whether msgspec, called from the caller's frame, refuses every document nested as deep as orjson refuses
    (then the brackets need no counting). Asked per block: the recursion limit is the process's to change."""
    try:
        _DECODE(_DEPTH_PROBE)
    except (RecursionError, msgspec.DecodeError):
        return True
    return False


def _candidates(lines: pa.Array, max_bytes: int) -> pa.BooleanArray:
    """Lines that look like one JSON object within the size limit and hold nothing suspect."""
    mask = pc.and_(
        pc.and_(pc.starts_with(lines, pattern=b"{"), pc.ends_with(lines, pattern=b"}")),
        pc.less_equal(pc.binary_length(lines), max_bytes),
    )
    return pc.and_(mask, pc.invert(pc.match_substring_regex(lines, pattern=_SUSPECT)))


def _not_deep(lines: pa.Array) -> pa.BooleanArray:
    """Lines that cannot be nested as deep as orjson refuses: short ones, and long ones with under 1,000
    brackets."""
    length = pc.binary_length(lines)
    long = pc.greater_equal(length, _DEEP_BYTES)
    if not pc.any(long).as_py():
        return pc.invert(long)
    brackets = pc.subtract(
        length, pc.binary_length(pc.replace_substring(pc.replace_substring(lines, "[", ""), "{", ""))
    )
    return pc.invert(pc.and_(long, pc.greater_equal(brackets, _DEEP_BRACKETS)))


def _utf8(lines: pa.Array) -> pa.BooleanArray:
    """Per line: is it UTF-8 (as strict as orjson: no surrogates, no overlong forms)? One C pass per block."""
    try:
        lines.cast(pa.large_string())
    except pa.ArrowInvalid:
        return pa.array([_is_utf8(line) for line in lines.to_pylist()], pa.bool_())
    return pa.repeat(pa.scalar(True), len(lines))


def _is_utf8(line: bytes | None) -> bool:
    try:
        (line or b"").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def check_block(lines: pa.Array, resource_type: str, max_bytes: int) -> FastRows:
    """The fast lines of ``lines`` (a binary array of whole lines without their line breaks) and their keys."""
    limit = sys.getrecursionlimit()
    counted = not _msgspec_refuses_orjsons_depth()
    candidate = pc.and_(_candidates(lines, max_bytes), _utf8(lines))
    if counted:  # kept from msgspec: a deep line could overflow the C stack at a raised limit
        candidate = pc.and_(candidate, _not_deep(lines))
    n = len(lines)
    ids: list[str | None] = [None] * n
    vids: list[str | None] = [None] * n
    lus: list[str | None] = [None] * n
    decode, unset, raw = _DECODE, msgspec.UNSET, lines.to_pylist()
    for i in pc.indices_nonzero(candidate).to_pylist():
        try:
            keys = decode(raw[i])
        except _NOT_FAST:
            continue
        if keys.resourceType != resource_type or not keys.id:
            continue
        ids[i] = keys.id  # set only for a line that decoded with its keys: what ``fast`` starts from
        meta = keys.meta
        if meta is not unset:
            vids[i] = None if meta.versionId is unset else meta.versionId
            lus[i] = None if meta.lastUpdated is unset else meta.lastUpdated
    lu = pa.array(lus, pa.string())
    lu_ok = pc.or_kleene(
        pc.is_null(lu),
        pc.and_(
            pc.match_substring_regex(lu, pattern=_INSTANT),
            pc.and_(pc.greater_equal(lu, "0002"), pc.less(lu, "9999")),
        ),
    )
    rid = pa.array(ids, pa.string())
    fast = pc.and_(pc.is_valid(rid), pc.fill_null(lu_ok, False))
    if not counted and sys.getrecursionlimit() != limit:  # another thread changed it while the block decoded
        fast = pc.and_(fast, _not_deep(lines))
    fast, instants = _instants(pc.if_else(fast, lu, None), fast)
    # hashed here, from the bytes the decode loop already holds: a second pass over the landed text cost ~0.1 s
    # more per 300,000 resources (docs/PERFORMANCE.md, "Issue 14, tenth session")
    sha256 = hashlib.sha256
    hashes = pa.array([sha256(line).hexdigest() for line in raw], pa.string())
    return FastRows(
        fast,
        pc.if_else(fast, rid, None),
        pc.if_else(fast, pa.array(vids, pa.string()), None),
        instants,
        hashes,
    )


def _instants(text: pa.Array, fast: pa.BooleanArray) -> tuple[pa.BooleanArray, pa.Array]:
    """``text`` (instants of the pattern, null where not fast) as timestamps; a line whose instant Arrow cannot
    read (a day the month does not have) is not fast."""
    try:
        return fast, text.cast(_TS)
    except pa.ArrowInvalid:
        bad = pa.array([v is not None and not _casts(v) for v in text.to_pylist()], pa.bool_())
        return pc.and_(fast, pc.invert(bad)), pc.if_else(bad, None, text).cast(_TS)


def _casts(instant: str) -> bool:
    try:
        pa.array([instant]).cast(_TS)
    except pa.ArrowInvalid:
        return False
    return True
