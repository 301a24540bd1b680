"""OperationOutcome entries of a searchset (``search.mode=outcome``).

An issue of severity ``error`` or ``fatal`` in a 200 searchset means the server did not return every match (e.g.
``incomplete``, ``too-costly``): the search is incomplete. So does a ``warning`` whose code says matches may be
missing (``incomplete``, ``too-costly``, ``timeout``: e.g. "too many matches", a source that did not answer in
time); FHIR's ``incomplete`` applies to search results whatever the severity. Other ``warning`` and
``information`` issues are notices.
Descriptions carry severities and issue codes only, never the diagnostics (which may echo request values, such
as the patient): notices go into run reports that are logged, and an error outcome's description into the
SearchIncompleteError's message, which is logged and kept as the run's error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from connectors.transport.answers import issues_of
from connectors.transport.issues import codes_said, values_said

__all__ = [
    "NOTICE_PREFIX",
    "PARTIAL_CODES",
    "SEVERE",
    "describe_outcome",
    "is_severe",
    "search_notices",
]

SEVERE = frozenset({"error", "fatal"})
#: Issue codes that, even at severity ``warning``, say the searchset may lack matches.
PARTIAL_CODES = frozenset({"incomplete", "too-costly", "timeout"})
NOTICE_PREFIX = "the server noted on the "


def _severities(outcome: Mapping[str, Any]) -> list[str]:
    return sorted({str(i.get("severity")) for i in issues_of(outcome)})


def _says_partial(issue: Any) -> bool:
    if not isinstance(issue, dict):
        return False
    severity = issue.get("severity")
    return severity in SEVERE or (severity == "warning" and issue.get("code") in PARTIAL_CODES)


def is_severe(outcome: Mapping[str, Any]) -> bool:
    """Whether the OperationOutcome says matches are missing: an ``error``/``fatal`` issue, or a ``warning``
    one coded ``incomplete``/``too-costly``/``timeout`` (a mark moved past it would skip them for good)."""
    return any(_says_partial(issue) for issue in issues_of(outcome))


def describe_outcome(outcome: Mapping[str, Any]) -> str:
    """``severity warning; issues: processing, informational``: distinct, no diagnostics, and the server's words as
    :mod:`connectors.transport.issues` keeps them (control characters gone, each value and the count capped), for a
    description is logged and goes into a SearchIncompleteError's message."""
    codes = codes_said(outcome)
    return f"severity {values_said(_severities(outcome)) or 'none'}; issues: {codes or 'none'}"


def search_notices(resource_type: str, outcomes: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per outcome without error/fatal issues: what the server noted about the search."""
    return [f"{NOTICE_PREFIX}{resource_type} search: {describe_outcome(o)}" for o in outcomes if not is_severe(o)]
