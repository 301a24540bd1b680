"""Which types a week's earlier reconcile run finished, read from its failure metadata (BDX-31,
``pipelines/defs/maintenance/reconcile_resume.py``): a type counts only when the record says so in full."""

from __future__ import annotations

import pytest
from dagster import MetadataValue

from pipelines.defs.maintenance.reconcile_resume import NOT_FINISHED, finished_types


def _failure_metadata(**entries: dict[str, object]) -> dict[str, object]:
    """A failed run's metadata as the op writes it: every entry a JSON mapping keyed by type."""
    return {name: MetadataValue.json(value) for name, value in entries.items()}


def _full(**changed: dict[str, object]) -> dict[str, dict[str, object]]:
    return {"deleted": {"Patient": 0, "Encounter": 2}} | {name: {} for name in NOT_FINISHED} | changed


def test_a_type_given_and_named_in_no_unfinished_entry_is_finished() -> None:
    metadata = _failure_metadata(**_full(not_reconciled={"Encounter": "http_503: ..."}))
    assert finished_types(metadata) == {"Patient"}


@pytest.mark.parametrize("missing", NOT_FINISHED)
def test_a_record_without_an_unfinished_entry_finishes_nothing(missing: str) -> None:
    """A run whose metadata lacks one of the entries naming unfinished types (an older op that did not write it,
    or one renamed since) cannot say which types it finished: none count, all are reconciled again. Before, the
    missing entry read as empty: every type in ``deleted`` counted as finished, those it named unfinished too."""
    entries = _full()
    del entries[missing]
    assert finished_types(_failure_metadata(**entries)) == set()


def test_a_record_whose_unfinished_entry_is_not_a_mapping_finishes_nothing() -> None:
    assert finished_types(_failure_metadata(**_full(not_reconciled=["Encounter"]))) == set()  # type: ignore[arg-type]


def test_a_type_the_grant_did_not_cover_is_not_finished() -> None:
    """Skipped for the grant (``skipped``): not reconciled, so a run asked for again after the grant widened
    lists it."""
    metadata = _failure_metadata(**_full(skipped={"Encounter": "scope_not_granted"}))
    assert finished_types(metadata) == {"Patient"}
