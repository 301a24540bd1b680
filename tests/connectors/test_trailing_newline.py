"""Names and ids checked by a regular expression refuse a trailing newline: Python's ``$`` also matches just before
a final ``\\n``, so ``^...$`` with ``re.match`` let ``"Patient\\n"`` pass as a resource type, ``"123\\n"`` as a FHIR id
(a Group id, a resource read) and a PKCE verifier with a newline through. Found by the
mutation audit of the conformance rows (BDX-03); every such pattern now ends in ``\\Z``. Checked through the
calls that use them (a request must not go out, a view name must not reach SQL); provider slugs and scopes are not
here: pydantic strips the former and the latter are split on whitespace before any pattern sees them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connectors.bulk import BulkClient
from connectors.fhir import FhirClient
from connectors.fhir._query import check_type
from connectors.smart.pkce import code_challenge_for
from connectors.tokens import StaticTokenSource
from tests.connectors.helpers import BASE, TOKEN, Script, recording_policy
from warehouse.errors import InvalidInputError
from warehouse.sof.errors import ViewDefinitionError
from warehouse.sof.model import parse_view_definition
from warehouse.view_checks import patient_references


def _refused(call: Callable[[], Any], *errors: type[BaseException]) -> None:
    with pytest.raises(errors or (ValueError,)):
        call()


def test_bdx03_a_resource_type_with_a_trailing_newline_is_refused() -> None:
    check_type("Patient")
    _refused(lambda: check_type("Patient\n"))


def test_bdx03_a_group_id_with_a_trailing_newline_is_refused_before_any_request() -> None:
    script = Script()
    bulk = BulkClient(BASE, StaticTokenSource(TOKEN), http=script.client(), retry=recording_policy([]))
    with pytest.raises(ValueError, match="group_id"):
        bulk.kickoff("group", group_id="g-1\n")
    assert script.requests == []


def test_a_resource_id_with_a_trailing_newline_is_refused_before_any_request() -> None:
    script = Script()
    client = FhirClient(BASE, StaticTokenSource(TOKEN), http=script.client(), retry=recording_policy([]))
    with pytest.raises(ValueError, match="FHIR id"):
        client.read("Patient", "123\n")
    assert script.requests == []


@pytest.mark.parametrize("field", ["name", "resource"])
def test_a_view_definition_name_or_resource_with_a_trailing_newline_is_refused(field: str) -> None:
    view = {"resource": "Patient", "name": "patient", "select": [{"column": [{"name": "id", "path": "id"}]}]}
    parse_view_definition(view)
    with pytest.raises(ViewDefinitionError):
        parse_view_definition({**view, field: view[field] + "\n"})


def test_a_view_name_with_a_trailing_newline_is_refused_by_the_reference_check() -> None:
    with pytest.raises(InvalidInputError, match="identifiers"):
        patient_references(None, "observation\n")  # type: ignore[arg-type]  # refused before the warehouse is used


def test_sal11_a_verifier_with_a_trailing_newline_is_refused() -> None:
    good = "a" * 43
    code_challenge_for(good)
    _refused(lambda: code_challenge_for(good + "\n"))
