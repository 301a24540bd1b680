"""What ``ehrsync reconcile`` reports of one reconciliation run (``ehrsync.run_now.run_reconcile_now``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dagster import ExecuteInProcessResult

__all__ = ["ReconcileNowResult", "unconfirmable_of"]


@dataclass(frozen=True)
class ReconcileNowResult:
    """What one reconciliation run did: rows tombstoned, and the types whose deletions the grant lets nothing
    confirm (type → why; their rows stay live), which the op reports without failing."""

    tombstoned: int
    unconfirmable: Mapping[str, str]


def unconfirmable_of(result: ExecuteInProcessResult) -> dict[str, str]:
    """The ``unconfirmable`` output metadata of the reconcile op (``{}`` when every type could be confirmed)."""
    for event in result.all_node_events:
        if event.is_successful_output and event.step_output_data.metadata.get("unconfirmable") is not None:
            value = event.step_output_data.metadata["unconfirmable"].value
            return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
    return {}
