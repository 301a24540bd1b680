"""How long to wait between Bulk status polls (BDX-09, BDX-10): the server's Retry-After when sane, a floor
that doubles while it throttles, and backoff through a streak of transient failures."""

from __future__ import annotations

from dataclasses import dataclass

from connectors.bulk.wire import BulkStatus
from connectors.errors import BulkStatusUnavailableError
from connectors.http import RetryPolicy, redact_url

__all__ = ["PollPacer"]


@dataclass
class PollPacer:
    """The delays of one job's polls. A streak of transient answers as long as ``policy.max_attempts`` raises
    BulkStatusUnavailableError: the job is likely alive, so the caller resumes it at the same URL later."""

    policy: RetryPolicy
    status_url: str
    polls: int = 0
    throttles: int = 0
    transients: int = 0
    floor: float = 0.0

    def next_delay(self, status: BulkStatus) -> float:
        policy = self.policy
        if status.throttled:
            self.throttles += 1
            self.floor = min(max(self.floor * 2, policy.retry_after_min_s * 2), policy.backoff_cap_s)
            return max(policy.delay_from_seconds(self.throttles - 1, status.retry_after), self.floor)
        if status.transient:
            self.transients += 1
            if self.transients >= policy.max_attempts:
                why = f": {status.note}" if status.note else ""
                raise BulkStatusUnavailableError(
                    f"bulk status kept failing transiently ({self.transients} times{why}); the job is kept and the "
                    "next run polls it again",
                    url=redact_url(self.status_url),
                )
            return policy.backoff_delay(self.transients - 1)
        self.transients = 0
        delay = max(policy.delay_from_seconds(self.polls, status.retry_after), self.floor)
        self.polls += 1
        return delay
