"""The run-wide CapabilityStatement cache shares a statement that was read, never a failed read."""

from __future__ import annotations

import uuid
from typing import Any

from engine.environment import _run_capabilities


def test_a_read_statement_is_shared_by_the_runs_later_steps() -> None:
    run_id, calls = uuid.uuid4().hex, []

    def fetch() -> dict[str, Any] | None:
        calls.append(1)
        return {"resourceType": "CapabilityStatement"}

    assert _run_capabilities("https://ehr.example/fhir", run_id, fetch) == {"resourceType": "CapabilityStatement"}
    assert _run_capabilities("https://ehr.example/fhir", run_id, fetch) == {"resourceType": "CapabilityStatement"}
    assert len(calls) == 1


def test_a_failed_read_is_tried_again_by_the_next_step() -> None:
    run_id = uuid.uuid4().hex
    answers: list[dict[str, Any] | None] = [None, {"resourceType": "CapabilityStatement"}]

    def fetch() -> dict[str, Any] | None:
        return answers.pop(0)

    assert _run_capabilities("https://ehr.example/fhir", run_id, fetch) is None
    assert _run_capabilities("https://ehr.example/fhir", run_id, fetch) == {"resourceType": "CapabilityStatement"}
    assert answers == []
