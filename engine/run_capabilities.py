"""The CapabilityStatement each run read of each FHIR base, shared by the run's steps in one process.

Dagster builds an environment per step; without this, every step of a run re-read its server's statement.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["RUN_CAPABILITIES", "run_capabilities"]

# The CapabilityStatement of each (FHIR base, run) this process has read; the oldest go first (runs come and go).
# A process runs one run at a time or a few (in-process runs, a run worker), and an EHR's statement can be
# megabytes once parsed: 8 kept the last few runs' without a long-lived process holding 64 (issue 14).
RUN_CAPABILITIES: OrderedDict[tuple[str, str], dict[str, Any] | None] = OrderedDict()
RUN_CAPABILITIES_MAX = 8
_LOCK = threading.Lock()


def run_capabilities(fhir_base: str, run_id: str, fetch: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
    """The run's CapabilityStatement of ``fhir_base``: read once (``fetch``), then shared by its steps.

    Only a statement that was read is shared; a failure is not, so one bad moment never costs the whole run
    its server's capabilities."""
    key = (fhir_base, run_id)
    with _LOCK:
        if key in RUN_CAPABILITIES:
            return RUN_CAPABILITIES[key]
    found = fetch()
    if found is None:  # a failed read (a 503 after retries) is tried again by the run's next step
        return None
    with _LOCK:
        RUN_CAPABILITIES[key] = found
        while len(RUN_CAPABILITIES) > RUN_CAPABILITIES_MAX:
            RUN_CAPABILITIES.popitem(last=False)
    return found
