"""Run tags: every ehrsync run says which connection, tenant and EHR source it serves.

The UI filters on them, and ``dagster.yaml`` limits concurrent runs per ``ehrsync/source`` so a busy
clinic's EHR is not hammered by many patients' syncs at once.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CONNECTION_TAG", "SOURCE_TAG", "TENANT_TAG", "TRIGGER_TAG", "run_tags"]

CONNECTION_TAG: Final = "ehrsync/connection"
TENANT_TAG: Final = "ehrsync/tenant"
SOURCE_TAG: Final = "ehrsync/source"
TRIGGER_TAG: Final = "ehrsync/trigger"


def run_tags(*, connection_id: str, tenant_id: str, source: str, trigger: str) -> dict[str, str]:
    """The tags for a run of one connection; ``trigger`` says who asked (first-sync, schedule, manual...)."""
    return {
        CONNECTION_TAG: connection_id,
        TENANT_TAG: tenant_id,
        SOURCE_TAG: source,
        TRIGGER_TAG: trigger,
    }
