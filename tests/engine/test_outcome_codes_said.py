"""The server's issue codes and severities in messages that name them without ``issue_summary`` (a searchset's
error outcome, a server notice, the warning of a refused search): cleaned and capped as it keeps them, for each of
those messages is logged (Dagster's event log too) and kept in the run's report."""

from __future__ import annotations

import pytest

from connectors.errors import SearchIncompleteError
from connectors.fhir import SearchPage
from connectors.fhir.outcomes import search_notices
from engine.search_recovery import search_plan
from tests.connectors.helpers import Script, bundle
from tests.connectors.helpers import fhir_answer as _answer
from tests.connectors.helpers import outcome as _outcome
from tests.connectors.helpers import scripted_fhir as _fhir

#: A server's issue code with a line of its own, a terminal escape and a megabyte's worth of text.
ODD_CODE = "invalid\nERROR forged log line\x1b[31m\u202e" + "x" * 5000


class _Sink:
    """Collects what ``search_plan`` lands and warns (the engine's sink writes files; only its warnings matter)."""

    mark = None

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def add(self, page: SearchPage, first: bool) -> None:
        pass

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def notice(self, message: str) -> None:
        self.warnings.append(message)


def _fit_for_a_log_line(text: str) -> None:
    assert "\n" not in text and "\x1b" not in text and "\u202e" not in text, text
    assert len(text) < 2000, len(text)


def test_codes_and_severities_named_without_the_summary_are_cleaned_and_capped_too() -> None:
    """What names an outcome's codes alone (a searchset's error outcome, a server notice, the warning of a refused
    search) says them as issue_summary does: a code with a newline forged a log line of its own and a long one went
    whole into the run's warnings and error; a hundred distinct codes were each named in a refused search's."""
    issues = [{"severity": "error\n" + "y" * 5000, "code": ODD_CODE}]
    issues += [{"severity": "error", "code": f"code-{n}"} for n in range(100)]
    outcome = _outcome(*issues)
    entries = [{"resource": outcome, "search": {"mode": "outcome"}}]
    with pytest.raises(SearchIncompleteError) as info:
        list(_fhir(Script(_answer(200, bundle(entries)))).search_pages("Observation"))
    _fit_for_a_log_line(str(info.value))
    assert "issues: invalid ERROR forged log line [31m" in str(info.value) and "and 91 more" in str(info.value)
    (notice,) = search_notices("Observation", [_outcome({"severity": "warning", "code": ODD_CODE})])
    _fit_for_a_log_line(notice)
    sink = _Sink()
    script = Script(_answer(400, outcome), _answer(200, bundle([])))
    assert search_plan(_fhir(script), "Observation", {"_lastUpdated": "gt2026-01-01"}, sink, None)
    (refused,) = sink.warnings
    _fit_for_a_log_line(refused)
    assert refused.startswith("the server refused _lastUpdated on Observation (HTTP 400, issues: invalid ERROR")
