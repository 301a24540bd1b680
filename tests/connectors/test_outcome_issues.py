"""What an error says of the server's OperationOutcome (``connectors.transport.issues``): each issue's severity,
code, expression (else location) and ``details.coding`` codes; never its diagnostics or details text, which servers
fill with the refused request (a patient's name, a search value). Error messages reach logs, Dagster's event log,
the CLI and stored run errors, so they are safe to log whole."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from connectors.bulk import BulkClient, incomplete_types, summarize_error_file
from connectors.errors import BulkExportError, FhirError, FhirNotFoundError
from connectors.fhir import FhirClient
from connectors.tokens import StaticTokenSource
from connectors.transport.issues import MAX_ISSUES, MAX_SUMMARY, issue_summary
from tests.connectors.helpers import BASE, TOKEN, Script, bundle, recording_policy
from tests.connectors.helpers import fhir_answer as _answer
from tests.connectors.helpers import outcome as _outcome
from tests.connectors.helpers import scripted_fhir as _fhir

SAID = "no Patient named Jane Doe born 1970-01-01"
EPIC_ERRORS = "urn:oid:1.2.840.114350.1.13.0.1.7.2.657369"


def test_a_fhir_error_names_the_issue_never_the_servers_diagnostics() -> None:
    coding = {"system": EPIC_ERRORS, "code": "59008", "display": SAID}
    issue = {
        "severity": "error",
        "code": "not-found",
        "diagnostics": SAID,
        "details": {"coding": [coding], "text": SAID},
    }
    answer = httpx.Response(
        404, content=orjson.dumps(_outcome(issue)), headers={"Content-Type": "application/fhir+json"}
    )
    client = FhirClient(BASE, StaticTokenSource(TOKEN), http=Script(answer).client(), retry=recording_policy([]))
    with pytest.raises(FhirNotFoundError) as info:
        client.read("Patient", "p1")
    said = f"GET {BASE}/Patient/p1 answered HTTP 404 (issues: error not-found [{EPIC_ERRORS}|59008])"
    assert str(info.value) == said
    assert info.value.operation_outcome == _outcome(issue)  # the whole answer stays on the error, for code


@pytest.mark.parametrize(
    ("issue", "said"),
    [
        (
            {"severity": "error", "code": "invalid", "expression": ["Patient.birthDate"]},
            "error invalid at Patient.birthDate",
        ),
        (
            {"severity": "error", "code": "invalid", "location": ["/f:Patient/f:birthDate"]},
            "error invalid at /f:Patient/f:birthDate",
        ),
        (
            {"severity": "fatal", "code": "processing", "details": {"coding": [{"code": "MSG_NO_MATCH"}]}},
            "fatal processing [MSG_NO_MATCH]",
        ),
        ({"code": "invalid", "details": {"text": SAID, "coding": [{"display": SAID}]}}, "invalid"),
        ({"diagnostics": SAID}, "issue"),
        ({"severity": "error", "code": "invalid\x1b[31m\u202e", "expression": "Patient.name"}, "error invalid [31m"),
    ],
    ids=["expression", "location", "coding-without-system", "details-text-and-display-left-out", "nothing-else", "odd"],
)
def test_each_issue_says_severity_code_expression_and_coding_codes(issue: dict[str, Any], said: str) -> None:
    assert issue_summary(_outcome(issue)) == said


def test_many_issues_are_deduplicated_and_capped() -> None:
    same = {"severity": "error", "code": "invalid", "diagnostics": SAID}
    assert issue_summary(_outcome(same, {**same, "diagnostics": "other words"})) == "error invalid"
    many = [{"severity": "error", "code": f"code-{n}"} for n in range(MAX_ISSUES + 3)]
    assert issue_summary(_outcome(*many)).endswith("error code-9; and 3 more issues")  # type: ignore[union-attr]
    long = {"severity": "error", "code": "invalid", "expression": ["x" * 1000]}
    assert len(issue_summary(_outcome(long)) or "") < 200


def test_the_whole_summary_is_capped_however_wide_each_issue_is() -> None:
    """Each value is capped, but ten issues of five expressions and five codings each made ~20k characters of one
    error message (and of every log line and Dagster event that carries it)."""
    wide = [
        {
            "severity": "error",
            "code": f"code-{n}",
            "expression": [f"{n}-{k}-" + "x" * 200 for k in range(5)],
            "details": {"coding": [{"system": "s" * 200, "code": f"{n}-{k}"} for k in range(5)]},
        }
        for n in range(MAX_ISSUES)
    ]
    said = issue_summary(_outcome(*wide)) or ""
    assert said.startswith("error code-0 at 0-0-") and said.endswith("…") and len(said) == MAX_SUMMARY


@pytest.mark.parametrize("outcome", [None, {}, {"issue": "not a list"}, _outcome("not an issue")])
def test_an_outcome_without_issues_says_nothing(outcome: dict[str, Any] | None) -> None:
    assert issue_summary(outcome) is None


@pytest.mark.parametrize("issue", [None, 5, True], ids=["null", "number", "boolean"])
def test_an_outcome_whose_issue_is_not_a_list_is_a_typed_error_never_a_type_error(issue: object, tmp_path: Any) -> None:
    """A server's malformed OperationOutcome (``"issue": null``) is read as one without issues wherever ehrsync
    looks at its issues (the retry rule, the error's codes, a searchset's outcomes, a Bulk status, an error file):
    before, iterating it raised a TypeError out of the request instead of the typed error naming the answer."""
    outcome = {"resourceType": "OperationOutcome", "issue": issue}
    with pytest.raises(FhirError) as info:
        _fhir(Script(_answer(400, outcome))).read("Patient", "p1")
    assert str(info.value) == f"GET {BASE}/Patient/p1 answered HTTP 400" and info.value.issue_codes == []
    page = bundle([{"resource": {"resourceType": "Observation", "id": "o1"}}, {"resource": outcome}])
    page["entry"][1]["search"] = {"mode": "outcome"}
    assert len(list(_fhir(Script(_answer(200, page))).search_pages("Observation"))) == 1
    bulk = BulkClient(BASE, StaticTokenSource(TOKEN), http=Script(_answer(404, outcome)).client())
    with pytest.raises(BulkExportError, match=r"answered HTTP 404$"):
        bulk.poll(f"{BASE}/bulk/status/job1")
    assert incomplete_types(outcome, "Observation", {"Observation"}) == {"Observation"}  # unreadable: held
    errors = tmp_path / "errors.ndjson"
    errors.write_bytes(orjson.dumps(outcome) + b"\n")
    assert summarize_error_file(errors).outcomes == 1
