"""What ehrsync may say of an EHR's OperationOutcome: each issue's severity, code, the elements it names
(``expression``, else the deprecated ``location``) and its ``details.coding`` codes (Epic numbers its errors there,
e.g. ``urn:oid:1.2.840.114350.1.13.0.1.7.2.657369|59008``). Never ``diagnostics`` or ``details.text``: servers fill
them with the request they refused (the patient's name, a search value, a note's text, the token sent), and the
summary goes into error messages that reach logs, Dagster's event log, the CLI and stored run errors and note
reasons. The full OperationOutcome stays on the exception (``operation_outcome``) for code that needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from connectors.transport.answers import CONTROL_CHARS, issues_of

__all__ = ["MAX_ISSUES", "MAX_SUMMARY", "cleaned", "codes_said", "coding_codes", "issue_summary", "values_said"]

#: Issues described; more are counted (``and 3 more issues``).
MAX_ISSUES = 10
_MAX_PARTS = 5  # expressions or codings per issue
_MAX_VALUE = 120  # characters of one code, system or expression
MAX_SUMMARY = 1_000  # characters of the whole summary: it is one clause of an error message, not a report


def cleaned(raw: Any, limit: int, *, cut_mark: str = "") -> str | None:
    """A server string fit to keep: control characters gone, whitespace collapsed, at most ``limit`` characters (a
    cut one ends with ``cut_mark``); None for anything but a non-blank string."""
    if not isinstance(raw, str):
        return None
    text = " ".join(CONTROL_CHARS.sub(" ", raw).split())
    if len(text) > limit:
        text = text[: limit - len(cut_mark)] + cut_mark
    return text or None


def _value(raw: Any) -> str | None:
    """A server string fit for a message."""
    return cleaned(raw, _MAX_VALUE)


def _listed(values: list[str], more: int) -> str:
    return ", ".join(values) + (f" and {more} more" if more > 0 else "")


def values_said(values: Iterable[Any]) -> str | None:
    """Distinct server strings (issue codes, severities) as one line fit for a message: each cleaned and capped as
    in :func:`issue_summary`, at most ``MAX_ISSUES`` of them and a count of the rest (None when there are none)."""
    found = list(dict.fromkeys(v for v in map(_value, values) if v))
    return _listed(found[:MAX_ISSUES], len(found) - MAX_ISSUES) or None


def codes_said(outcome: Mapping[str, Any] | None) -> str | None:
    """The issues' distinct codes as one line (``invalid, not-supported``), for messages that name codes only."""
    return values_said(i.get("code") for i in issues_of(outcome))


def coding_codes(details: Any, value: Callable[[Any], str | None] = _value) -> list[str]:
    """Distinct ``system|code`` (or ``code``) of each ``details.coding``, each part read by ``value``; its display
    text is left out with ``details.text``."""
    codings = details.get("coding") if isinstance(details, dict) else None
    found: list[str] = []
    for coding in codings if isinstance(codings, list) else []:
        code = value(coding.get("code")) if isinstance(coding, dict) else None
        if code:
            system = value(coding.get("system"))
            found.append(f"{system}|{code}" if system else code)
    return list(dict.fromkeys(found))


def _issue(issue: Mapping[str, Any]) -> str:
    """``error invalid at Patient.birthDate [urn:oid:1.2.840.114350.1.13.0.1.7.2.657369|59008]``."""
    said = " ".join(v for v in (_value(issue.get("severity")), _value(issue.get("code"))) if v) or "issue"
    named = issue.get("expression") or issue.get("location")
    where = [v for v in map(_value, named) if v] if isinstance(named, list) else []
    if where:
        said += f" at {_listed(where[:_MAX_PARTS], len(where) - _MAX_PARTS)}"
    codings = coding_codes(issue.get("details"))
    if codings:
        said += f" [{_listed(codings[:_MAX_PARTS], len(codings) - _MAX_PARTS)}]"
    return said


def issue_summary(outcome: Mapping[str, Any] | None) -> str | None:
    """The issues as one line, ``; ``-separated and deduplicated (None when the outcome has none)."""
    described = list(dict.fromkeys(_issue(i) for i in issues_of(outcome)))
    if not described:
        return None
    more = len(described) - MAX_ISSUES
    said = "; ".join(described[:MAX_ISSUES]) + (f"; and {more} more issues" if more > 0 else "")
    return said if len(said) <= MAX_SUMMARY else said[: MAX_SUMMARY - 1] + "…"
