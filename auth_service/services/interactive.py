"""The retry budget of admin calls a person is waiting on (test connection, test read/note, discovery).

Pipelines may wait minutes for a flaky EHR; an admin clicking "test" gets ``503 ehr_unavailable`` within a few
seconds instead: one retry, short backoff, a Retry-After clamped to 2 s, and a 10 s read timeout. A throttle asking
for longer than 2 s (and at most an hour) is not retried: its answer, with the EHR's Retry-After, comes at once.
"""

from __future__ import annotations

import httpx

from connectors.http import RetryPolicy

__all__ = ["INTERACTIVE_TIMEOUT", "interactive_retry"]

INTERACTIVE_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def interactive_retry() -> RetryPolicy:
    """A fresh policy per call (its jitter source is per instance)."""
    return RetryPolicy(
        max_attempts=2,
        retry_after_min_s=0.5,
        retry_after_max_s=2.0,
        backoff_start_s=0.5,
        backoff_cap_s=1.0,
    )
