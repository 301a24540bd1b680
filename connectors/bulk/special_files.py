"""Readers for the manifest's ``deleted`` (BDX-21) and ``error`` (BDX-22) files, one line at a time."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from connectors.bulk.ndjson import iter_numbered_ndjson_lines
from connectors.errors import BulkExportError
from connectors.http import parse_instant
from connectors.transport.answers import issues_of

__all__ = [
    "WHOLE_EXPORT",
    "DeletedRef",
    "ErrorFileSummary",
    "incomplete_types",
    "iter_deleted_refs",
    "summarize_error_file",
]


@dataclass(frozen=True)
class DeletedRef:
    """A tombstone: ``deleted_at`` is the Bundle's ``meta.lastUpdated``, else the export's transactionTime."""

    resource_type: str
    id: str
    deleted_at: datetime


def _iter_resources(path: Path, resource_type: str, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number in the file, resource)`` of an NDJSON file whose every line must be a ``resource_type``."""
    for number, line in iter_numbered_ndjson_lines(path):
        try:
            resource = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise BulkExportError(f"{what} line {number} is not JSON") from exc
        if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
            raise BulkExportError(f"{what} line {number} is not {_article(resource_type)} {resource_type}")
        yield number, resource


def _article(word: str) -> str:
    return "an" if word[0] in "AEIOU" else "a"


def iter_deleted_refs(path: Path, transaction_time: datetime) -> Iterator[DeletedRef]:
    """Yield ``DELETE`` entries of the transaction Bundles in a ``deleted`` file; malformed lines raise (an
    ``entry`` that is not an array, a bare object for one item, or an entry that is not an object, too: read as no
    entry, its deletions were dropped unseen)."""
    for number, bundle in _iter_resources(path, "Bundle", "deleted file"):
        meta = bundle.get("meta") if isinstance(bundle.get("meta"), dict) else {}
        deleted_at = (parse_instant(meta.get("lastUpdated")) if meta else None) or transaction_time
        entries = bundle.get("entry")
        if entries is not None and not isinstance(entries, list):
            raise BulkExportError(f"deleted file line {number}: Bundle.entry is not an array")
        for i, entry in enumerate(entries or []):
            if not isinstance(entry, dict):
                raise BulkExportError(f"deleted file line {number}: Bundle.entry[{i}] is not an object")
            request = entry.get("request")
            if not isinstance(request, dict) or request.get("method") != "DELETE":
                continue
            url = str(request.get("url") or "").split("?", 1)[0].strip("/")
            parts = url.split("/")
            if len(parts) < 2 or not parts[-2] or not parts[-1]:
                raise BulkExportError(f"deleted file line {number}: request.url is not Type/id")
            yield DeletedRef(parts[-2], parts[-1], deleted_at)


@dataclass(frozen=True)
class ErrorFileSummary:
    """Issue counts of an ``error`` file: ``information``/``warning`` are metadata, ``error``/``fatal`` fail checks."""

    outcomes: int = 0
    by_severity: dict[str, int] = field(default_factory=dict)
    by_code: dict[str, int] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return self.by_severity.get("error", 0) + self.by_severity.get("fatal", 0)


def summarize_error_file(path: Path) -> ErrorFileSummary:
    """Count OperationOutcome issues by severity and code (diagnostics are not kept: they may hold PHI)."""
    outcomes = 0
    severities: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    for _number, outcome in _iter_resources(path, "OperationOutcome", "error file"):
        outcomes += 1
        for issue in issues_of(outcome):
            severities[str(issue.get("severity", "error"))] += 1
            codes[str(issue.get("code", "unknown"))] += 1
    return ErrorFileSummary(outcomes, dict(severities), dict(codes))


#: What ``incomplete_types`` answers when a failure names no resource type: the whole export is incomplete.
WHOLE_EXPORT = "*"
_FAILING = frozenset({"error", "fatal"})
_WORD_RE = re.compile(r"[A-Z][A-Za-z]{1,63}")


def _texts(issue: Mapping[str, Any]) -> Iterator[str]:
    """The issue's fields that may name a resource type: expression/location first, then details, diagnostics."""
    for key in ("expression", "location"):
        values = issue.get(key)
        if isinstance(values, list):
            yield from (v for v in values if isinstance(v, str))
    details = issue.get("details")
    if isinstance(details, dict):
        if isinstance(details.get("text"), str):
            yield details["text"]
        for coding in details.get("coding") or []:
            if isinstance(coding, dict):
                yield from (str(coding[k]) for k in ("code", "display") if isinstance(coding.get(k), str))
    if isinstance(issue.get("diagnostics"), str):
        yield issue["diagnostics"]


def incomplete_types(line: object, item_type: str, candidates: Collection[str]) -> set[str]:
    """The resource types an ``error``-file line says were not (fully) exported; empty when it reports no failure.

    An ``error``/``fatal`` issue is attributed to the ``candidates`` (the export's types) its expression,
    location, details or diagnostics name; one that names none, a line that is not an OperationOutcome, and one
    whose ``issue`` (1..* in FHIR) is missing, empty or holds something other than objects (it may have said a type
    failed: nothing can tell), to the manifest item's ``type`` when that is not OperationOutcome, else to
    ``{WHOLE_EXPORT}``. ``information``/``warning`` issues are metadata and yield nothing.
    """
    fallback = {item_type} if item_type and item_type != "OperationOutcome" else {WHOLE_EXPORT}
    if not isinstance(line, dict) or line.get("resourceType") != "OperationOutcome":
        return fallback
    issues = line.get("issue")
    if not isinstance(issues, list) or not issues or not all(isinstance(i, Mapping) for i in issues):
        return fallback
    found: set[str] = set()
    for issue in issues_of(line):
        if str(issue.get("severity", "error")) not in _FAILING:
            continue
        named = {w for text in _texts(issue) for w in _WORD_RE.findall(text) if w in candidates}
        found |= named or fallback
    return found
