"""Per-line checks that decide whether an NDJSON line lands or goes to quarantine.

Kept free of I/O so the hot path is one ``orjson.loads`` plus a few dict lookups per line (BDX-17, BDX-20).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["LineRejected", "ParsedLine", "check_resource", "parse_instant", "parse_line", "reject_nul_escape"]

# FHIR `instant`: seconds required, timezone required (https://hl7.org/fhir/R4/datatypes.html#instant).
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
# An unescaped \u0000 inside a JSON string: PostgreSQL JSONB cannot store it, so such a line is quarantined
# on both backends rather than failing a whole COPY later.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class LineRejected(Exception):
    """A line that must be quarantined; the message is the reason (never the content)."""


@dataclass(frozen=True, slots=True)
class ParsedLine:
    id: str
    last_updated: datetime | None
    version_id: str | None


def parse_instant(value: str) -> datetime:
    """Parse a FHIR instant into an aware UTC datetime, or raise ``ValueError``."""
    if not _INSTANT.fullmatch(value):
        raise ValueError("not a FHIR instant (YYYY-MM-DDThh:mm:ss[.fff](Z|+hh:mm))")
    return datetime.fromisoformat(value).astimezone(UTC)


def parse_line(raw: bytes, resource_type: str) -> ParsedLine:
    """Validate one raw NDJSON line for a writer of ``resource_type``; raise ``LineRejected`` with the reason."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
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
    version_id = meta.get("versionId")
    if version_id is not None and not isinstance(version_id, str):
        raise LineRejected("'meta.versionId' is not a string")
    raw_lu = meta.get("lastUpdated")
    if raw_lu is None:
        return ParsedLine(rid, None, version_id)
    if not isinstance(raw_lu, str):
        raise LineRejected("'meta.lastUpdated' is not a string")
    try:
        last_updated = parse_instant(raw_lu)
    except ValueError as exc:
        raise LineRejected(f"malformed 'meta.lastUpdated': {exc}") from None
    return ParsedLine(rid, last_updated, version_id)
