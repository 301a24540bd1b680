"""Per-line checks that decide whether an NDJSON line lands or goes to quarantine.

Kept free of I/O so the hot path is one ``orjson.loads`` plus a few dict lookups per line (BDX-17, BDX-20).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from connectors.instants import clamp_leap_second

__all__ = ["LineRejected", "ParsedLine", "check_resource", "parse_instant", "parse_line", "reject_nul_escape"]

# FHIR `instant`: seconds required (00-59, or 60: a leap second), timezone required
# (https://hl7.org/fhir/R4/datatypes.html#instant).
_NOT_INSTANT = "not a FHIR instant (YYYY-MM-DDThh:mm:ss[.fff](Z|+hh:mm))"
# An unescaped \u0000 inside a JSON string: PostgreSQL JSONB cannot store it, so such a line is quarantined
# on both backends rather than failing a whole COPY later.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
# orjson reads every JSON number as a double or a 64-bit integer and refuses one past a double's range; the rest of
# ehrsync (the bulk file checks, the resources API) reads stored resources with it too, so such a line is kept in
# the quarantine, named for what it is.
_PAST_DOUBLE = (
    "holds a number past a double's range (such as 1e400): valid JSON, but ehrsync's JSON parser cannot read it"
)


class LineRejected(Exception):
    """A line that must be quarantined; the message is the reason (never the content)."""


class ParsedLine(NamedTuple):
    """The landing keys of one resource (a tuple: this is built once per line on the hot path)."""

    id: str
    last_updated: datetime | None
    version_id: str | None


def parse_instant(value: str) -> datetime:
    """Parse a FHIR instant into an aware UTC datetime, or raise ``ValueError``.

    Hand-checked shape plus ``fromisoformat`` (C): a regex here cost more than the JSON parse of the line.
    ``fromisoformat`` alone is too lenient (it takes dates, minutes-only times, basic format, ``+0100``).
    A leap second (``23:59:60Z``, ``:60.5+01:00``; FHIR allows second 60 in any minute) lands as ``:59.999999`` of
    its minute, zone kept, then UTC (``connectors.instants.clamp_leap_second``): clamped down, never later than
    the moment it names, so nothing built from it (a mark, the newest ``lastUpdated``) moves past unseen data.
    """
    n = len(value)
    if (
        n < 20
        or not value.isascii()
        or value[4] != "-"
        or value[7] != "-"
        or value[10] != "T"
        or value[13] != ":"
        or value[16] != ":"
    ):
        raise ValueError(_NOT_INSTANT)
    if value[-1] == "Z":
        zone = 1
    elif n >= 25 and value[-6] in "+-" and value[-3] == ":":
        zone = 6
    else:
        raise ValueError(_NOT_INSTANT)
    frac = value[19 : n - zone]
    if frac and (len(frac) < 2 or frac[0] != "." or not frac[1:].isdigit()):
        raise ValueError(_NOT_INSTANT)
    try:
        parsed = datetime.fromisoformat(clamp_leap_second(value))
    except ValueError:
        raise ValueError(_NOT_INSTANT) from None
    if parsed.tzinfo is None:
        raise ValueError(_NOT_INSTANT)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is past datetime.max in UTC
        raise ValueError(_NOT_INSTANT) from None


def parse_line(raw: bytes, resource_type: str) -> ParsedLine:
    """Validate one raw NDJSON line for a writer of ``resource_type``; raise ``LineRejected`` with the reason."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "infinity" in exc.msg:  # 1e400 is valid JSON and a FHIR decimal: say what is wrong, not "invalid"
            raise LineRejected(_PAST_DOUBLE) from None
        raise LineRejected(f"not valid JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise LineRejected(f"not a JSON object (got {type(obj).__name__})")
    parsed = check_resource(obj, resource_type)
    reject_nul_escape(raw)
    return parsed


def reject_nul_escape(raw: bytes) -> None:
    """Raise ``LineRejected`` when the JSON text holds a ``\\u0000`` escape (PostgreSQL JSONB rejects it)."""
    if b"\\u0000" in raw and _NUL_ESCAPE.search(raw):
        raise LineRejected("contains a \\u0000 escape, which JSONB cannot store")


def check_resource(obj: dict[str, Any], resource_type: str) -> ParsedLine:
    """Extract the landing keys from a parsed resource, or raise ``LineRejected`` naming the bad field."""
    actual_type = obj.get("resourceType")
    if actual_type != resource_type:
        raise LineRejected(f"resourceType {actual_type!r} does not match the writer's {resource_type!r}")
    rid = obj.get("id")
    if not isinstance(rid, str) or not rid:
        raise LineRejected("missing or non-string 'id'")
    meta = obj.get("meta")
    if meta is None:
        return ParsedLine(rid, None, None)
    if not isinstance(meta, dict):
        raise LineRejected("'meta' is not an object")
    version_id = _meta_string(meta, "versionId")
    raw_lu = _meta_string(meta, "lastUpdated")
    if raw_lu is None:
        return ParsedLine(rid, None, version_id)
    try:
        last_updated = parse_instant(raw_lu)
    except ValueError as exc:
        raise LineRejected(f"malformed 'meta.lastUpdated': {exc}") from None
    return ParsedLine(rid, last_updated, version_id)


def _meta_string(meta: dict[str, Any], key: str) -> str | None:
    """``meta[key]`` when absent or a string; any other JSON value rejects the line."""
    value = meta.get(key)
    if value is not None and not isinstance(value, str):
        raise LineRejected(f"'meta.{key}' is not a string")
    return value
