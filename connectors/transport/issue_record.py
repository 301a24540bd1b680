"""An EHR's OperationOutcome as a refused note keeps it for the person who must fix the note: each issue's severity,
code, the elements it names (``expression``, else the deprecated ``location``), its ``details.coding`` codes and, unlike
every message (``connectors.transport.issues``), its ``diagnostics``: the server's own words, which often quote the
refused request (the note's text, the patient's name). So this record goes only where the note's text already is
(the note's outbox row, ``store.models.NoteOutbox.outcome_issues``) and to the admin API's answer about that one
note; never into a log, a message, a Dagster event or the analysts' tables.

The request's own credentials are already gone (``connectors.transport.answers.outcome_without_credentials``, applied
wherever an OperationOutcome is read from an answer). Here control characters are removed, whitespace collapsed,
each value capped at ``MAX_VALUE`` characters, each issue's lists at ``MAX_PARTS`` items and the issues at
``MAX_ISSUES``; what was left out is counted (``omitted``, ``truncated``), never dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.transport.answers import issues_of
from connectors.transport.issues import cleaned, coding_codes

__all__ = ["MAX_ISSUES", "MAX_PARTS", "MAX_VALUE", "issue_record"]

#: Issues kept; more are counted in ``omitted``.
MAX_ISSUES = 20
#: Expressions (or locations) and codings kept per issue.
MAX_PARTS = 10
#: Characters kept of one value (a diagnostics text, an expression, a code); a cut value ends with ``…``.
MAX_VALUE = 1000


def _text(raw: Any) -> str | None:
    """A server string as kept: control characters gone, whitespace collapsed, at most ``MAX_VALUE`` characters."""
    return cleaned(raw, MAX_VALUE, cut_mark="…")


def _texts(raw: Any) -> list[str]:
    return [t for t in map(_text, raw) if t] if isinstance(raw, list) else []


def _issue(issue: Mapping[str, Any]) -> dict[str, Any]:
    where = _texts(issue.get("expression")) or _texts(issue.get("location"))
    codings = coding_codes(issue.get("details"), _text)  # Epic numbers its errors there
    return {
        "severity": _text(issue.get("severity")),
        "code": _text(issue.get("code")),
        "expression": where[:MAX_PARTS],
        "codings": codings[:MAX_PARTS],
        "diagnostics": _text(issue.get("diagnostics")),
        "truncated": len(where) > MAX_PARTS or len(codings) > MAX_PARTS,
    }


def issue_record(outcome: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``{"issues": [...], "omitted": N}`` for an OperationOutcome with issues, else None (nothing to keep)."""
    found = [_issue(i) for i in issues_of(outcome)]
    if not found:
        return None
    return {"issues": found[:MAX_ISSUES], "omitted": len(found) - len(found[:MAX_ISSUES])}
