"""How long Dagster keeps finished runs and their event logs, and when the pruning job runs.

Dagster's run and event storage grows with every run (about 1.2 MB per sync run), not with the data; the
``prune_dagster_runs`` job (``pipelines.defs.maintenance.run_retention``) deletes finished runs older than
``EHRSYNC_RUN_RETENTION_DAYS`` on the ``EHRSYNC_RUN_RETENTION_CRON`` schedule (UTC). Parsed here, without
Dagster, so a malformed value stops the start with one line naming the variable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from engine.cron import cron_problem
from engine.env_numbers import whole_number
from engine.errors import PipelineConfigurationError

__all__ = ["DEFAULT_RUN_RETENTION_CRON", "DEFAULT_RUN_RETENTION_DAYS", "RunRetention"]

DEFAULT_RUN_RETENTION_DAYS = 30
DEFAULT_RUN_RETENTION_CRON = "15 2 * * *"  # daily 02:15 UTC, before the reconcile (03:00) and keepalive (04:30)
MAX_RUN_RETENTION_DAYS = 3650
DAYS_ENV = "EHRSYNC_RUN_RETENTION_DAYS"
CRON_ENV = "EHRSYNC_RUN_RETENTION_CRON"
# Five fields (numbers or names, ranges, lists, steps, `*`, `?`, `L`, `#`) or an alias such as `@daily`;
# ``cron_problem`` checks each field, its range and that it fires.
_CRON = re.compile(r"@[A-Za-z]+|[0-9A-Za-z*/,\-?#]+(?:\s+[0-9A-Za-z*/,\-?#]+){4}")


@dataclass(frozen=True)
class RunRetention:
    """Finished runs older than ``days`` are deleted with their event logs, on the ``cron`` schedule (UTC)."""

    days: int = DEFAULT_RUN_RETENTION_DAYS
    cron: str = DEFAULT_RUN_RETENTION_CRON

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> RunRetention:
        days = whole_number(env, DAYS_ENV, DEFAULT_RUN_RETENTION_DAYS, 1, MAX_RUN_RETENTION_DAYS, "days")
        cron = " ".join(env.get(CRON_ENV, DEFAULT_RUN_RETENTION_CRON).split())
        if not _CRON.fullmatch(cron):
            raise PipelineConfigurationError(
                f"{CRON_ENV}={cron[:60]!r} is not a five-field cron expression (minute hour day month weekday, UTC)"
            )
        if problem := cron_problem(cron):
            raise PipelineConfigurationError(
                f"{CRON_ENV}={cron[:60]!r} is not a schedule that runs: {problem} (minute hour day month weekday, UTC)"
            )
        return cls(days=days, cron=cron)
