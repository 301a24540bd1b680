"""Settings of the analyst views: snapshot generations kept, refresh debounce, and the PostgreSQL lock wait.

Parsed here, without Dagster, so a malformed value stops the start with one line naming the variable; the values
reach the steps and the sensor through ``pipelines.analyst_resource.AnalystResource``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.env_numbers import whole_number

__all__ = ["GENERATIONS_ENV", "LOCK_TIMEOUT_ENV", "MIN_INTERVAL_ENV", "AnalystSettings"]

GENERATIONS_ENV = "EHRSYNC_ANALYST_GENERATIONS"
MIN_INTERVAL_ENV = "EHRSYNC_ANALYST_MIN_INTERVAL_SECONDS"
LOCK_TIMEOUT_ENV = "EHRSYNC_ANALYST_LOCK_TIMEOUT_SECONDS"


@dataclass(frozen=True)
class AnalystSettings:
    """``generations``: analyst snapshots kept (DuckDB); ``min_interval_s``: least time between two refreshes the
    sensor requests; ``lock_timeout_s``: how long a PostgreSQL view refresh waits for analysts' transactions."""

    generations: int = 3
    min_interval_s: int = 60
    lock_timeout_s: int = 10

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> AnalystSettings:
        return cls(
            generations=whole_number(env, GENERATIONS_ENV, 3, 1, 100, "analyst snapshot generations kept"),
            min_interval_s=whole_number(env, MIN_INTERVAL_ENV, 60, 0, 86_400, "seconds between analyst view refreshes"),
            lock_timeout_s=whole_number(env, LOCK_TIMEOUT_ENV, 10, 1, 3_600, "seconds a view refresh waits for a lock"),
        )
