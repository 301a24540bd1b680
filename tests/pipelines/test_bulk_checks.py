"""``no_server_errors`` (issue 12) beside ``export_complete`` (BDX-22): what a server's error files say, as a table.

The sandbox fault path (a fatal outcome for a type fails both) runs end to end in ``test_end_to_end``."""

from __future__ import annotations

import pytest

from engine.reports import BulkReport, TypeReport
from pipelines.defs._shared.metadata import server_errors_verdict
from pipelines.defs.bulk.assets import complete_verdict


def _report(issues: dict[str, int], *, incomplete: list[str] | None = None, unreadable: int = 0) -> BulkReport:
    report = BulkReport("run", "c1", error_files=1 if issues or unreadable else 0, error_outcomes=sum(issues.values()))
    report.error_issues = dict(issues)
    report.incomplete_types = incomplete or []
    if unreadable:
        report.types["OperationOutcome"] = TypeReport("OperationOutcome", quarantined=unreadable)
    return report


@pytest.mark.parametrize(
    ("report", "no_server_errors", "complete"),
    [
        (_report({}), True, True),
        (_report({"information": 1, "warning": 2}), True, True),  # notes, not errors
        (_report({"error": 1}), False, True),  # an error that names no missing type: the run still succeeds
        (_report({"fatal": 1}, incomplete=["Observation"]), False, False),  # the sandbox's bulk_error_file fault
        (_report({}, unreadable=1), False, True),  # a line in an error file that is no OperationOutcome
    ],
)
def test_server_errors_fail_their_own_non_blocking_check(
    report: BulkReport, no_server_errors: bool, complete: bool
) -> None:
    verdict = server_errors_verdict(report)
    assert verdict.passed is no_server_errors
    assert complete_verdict(report).passed is complete
    assert verdict.metadata["failing_issues"] == report.error_issues.get("error", 0) + report.error_issues.get(
        "fatal", 0
    )
