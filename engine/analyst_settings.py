"""Settings of the analyst views: snapshot generations kept, refresh debounce, and the PostgreSQL lock wait.

Parsed here, without Dagster, so a malformed value stops the start with one line naming the variable; the values
reach the steps and the sensor through ``pipelines.analyst_resource.AnalystResource``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.errors import PipelineConfigurationError

__all__ = ["GENERATIONS_ENV", "LOCK_TIMEOUT_ENV", "MIN_INTERVAL_ENV", "AnalystSettings"]

GENERATIONS_ENV = "EHRSYNC_ANALYST_GENERATIONS"
MIN_INTERVAL_ENV = "EHRSYNC_ANALYST_MIN_INTERVAL_SECONDS"
LOCK_TIMEOUT_ENV = "EHRSYNC_ANALYST_LOCK_TIMEOUT_SECONDS"


def _whole(env: Mapping[str, str], name: str, default: int, low: int, high: int, what: str) -> int:
    raw = env.get(name, str(default)).strip()
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise PipelineConfigurationError(f"{name}={raw[:40]!r} is not a whole number from {low} to {high} ({what})")
    return int(raw)


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
            generations=_whole(env, GENERATIONS_ENV, 3, 1, 100, "analyst snapshot generations kept"),
            min_interval_s=_whole(env, MIN_INTERVAL_ENV, 60, 0, 86_400, "seconds between analyst view refreshes"),
            lock_timeout_s=_whole(env, LOCK_TIMEOUT_ENV, 10, 1, 3_600, "seconds a view refresh waits for a lock"),
        )
