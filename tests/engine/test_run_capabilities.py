"""The run-wide CapabilityStatement cache shares a statement that was read, never a failed read."""

from __future__ import annotations

import uuid
from typing import Any

from engine.run_capabilities import RUN_CAPABILITIES, run_capabilities


def test_a_read_statement_is_shared_by_the_runs_later_steps() -> None:
    run_id, calls = uuid.uuid4().hex, []

    def fetch() -> dict[str, Any] | None:
        calls.append(1)
        return {"resourceType": "CapabilityStatement"}

    assert run_capabilities("https://ehr.example/fhir", run_id, fetch) == {"resourceType": "CapabilityStatement"}
    assert run_capabilities("https://ehr.example/fhir", run_id, fetch) == {"resourceType": "CapabilityStatement"}
    assert len(calls) == 1


def test_a_failed_read_is_tried_again_by_the_next_step() -> None:
    run_id = uuid.uuid4().hex
    answers: list[dict[str, Any] | None] = [None, {"resourceType": "CapabilityStatement"}]

    def fetch() -> dict[str, Any] | None:
        return answers.pop(0)

    assert run_capabilities("https://ehr.example/fhir", run_id, fetch) is None
    assert run_capabilities("https://ehr.example/fhir", run_id, fetch) == {"resourceType": "CapabilityStatement"}
    assert answers == []


def test_a_long_lived_process_keeps_only_the_last_few_runs_statements() -> None:
    """Issue 14: a statement can be megabytes once parsed; a process syncing for days keeps a few, not 64."""
    for _ in range(100):
        run_capabilities("https://ehr.example/fhir", uuid.uuid4().hex, lambda: {"resourceType": "CapabilityStatement"})
    assert len(RUN_CAPABILITIES) <= 8
