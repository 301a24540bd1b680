"""Flatten bulk ``error`` file lines (OperationOutcome, BDX-22) into rows for ``fhir_errors``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from warehouse.errors import InvalidInputError

__all__ = ["SEVERITIES", "ErrorCounts", "OutcomeItem", "OutcomeRow", "outcome_rows"]

SEVERITIES = ("fatal", "error", "warning", "information")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class OutcomeRow:
    line_number: int
    severity: str | None  # the most severe issue of the outcome
    code: str | None
    diagnostics: str | None
    issue_count: int
    outcome_json: str


@dataclass
class ErrorCounts:
    """What ``record_errors`` stored: outcomes, and issues per severity (the BDX-22 threshold input)."""

    outcomes: int = 0
    issues: Counter[str] = field(default_factory=Counter)

    @property
    def failing(self) -> int:
        """Issues of severity ``error`` or ``fatal``: these count against the asset-check threshold."""
        return self.issues["error"] + self.issues["fatal"]


def _as_mapping(item: Mapping[str, Any] | bytes | str, line_number: int) -> tuple[Mapping[str, Any], str]:
    if isinstance(item, Mapping):
        return item, orjson.dumps(dict(item)).decode()
    raw = item.encode() if isinstance(item, str) else bytes(item)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidInputError(f"error-file line {line_number} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise InvalidInputError(f"error-file line {line_number} is not a JSON object")
    return obj, raw.decode().strip()


def _issue_text(issue: Mapping[str, Any]) -> str | None:
    diag = issue.get("diagnostics")
    if isinstance(diag, str):
        return diag
    details = issue.get("details")
    if isinstance(details, Mapping) and isinstance(details.get("text"), str):
        return str(details["text"])
    return None


Outcome = Mapping[str, Any] | bytes | str
#: An outcome as its caller read it: alone (numbered by its place in the input) or with its line number in the file
#: (a reader that skipped unusable lines keeps the numbers of the lines after them).
OutcomeItem = Outcome | tuple[int, Outcome]


def _numbered(outcomes: Iterable[OutcomeItem]) -> Iterator[tuple[int, Outcome]]:
    for place, item in enumerate(outcomes, start=1):
        yield item if isinstance(item, tuple) else (place, item)


def outcome_rows(outcomes: Iterable[OutcomeItem], counts: ErrorCounts) -> Iterator[OutcomeRow]:
    """Yield one row per OperationOutcome (blank lines skipped, numbered like the file); update ``counts``."""
    for line_number, item in _numbered(outcomes):
        if isinstance(item, bytes | str) and not item.strip():
            continue
        obj, text = _as_mapping(item, line_number)
        if obj.get("resourceType") != "OperationOutcome":
            raise InvalidInputError(f"error-file line {line_number} is not an OperationOutcome")
        raw_issues = obj.get("issue")
        issues = [i for i in raw_issues if isinstance(i, Mapping)] if isinstance(raw_issues, list) else []
        worst: Mapping[str, Any] | None = None
        for issue in issues:
            sev = issue.get("severity")
            if isinstance(sev, str) and sev in _RANK:
                counts.issues[sev] += 1
                if worst is None or _RANK[sev] < _RANK.get(str(worst.get("severity")), len(_RANK)):
                    worst = issue
        if worst is None and issues:
            worst = issues[0]
        counts.outcomes += 1
        yield OutcomeRow(
            line_number=line_number,
            severity=str(worst["severity"]) if worst is not None and isinstance(worst.get("severity"), str) else None,
            code=str(worst["code"]) if worst is not None and isinstance(worst.get("code"), str) else None,
            diagnostics=_issue_text(worst) if worst is not None else None,
            issue_count=len(issues),
            outcome_json=text,
        )
