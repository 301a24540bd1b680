"""``AnalystResource``: how the analyst views are refreshed and published (bound from ``AnalystSettings``)."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from engine.analyst_settings import GENERATIONS_ENV, LOCK_TIMEOUT_ENV, MIN_INTERVAL_ENV, AnalystSettings

__all__ = ["AnalystResource"]


class AnalystResource(ConfigurableResource["AnalystResource"]):
    """Snapshot generations kept (DuckDB), the sensor's debounce, and the PostgreSQL view lock wait."""

    generations: int = Field(default=3, ge=1, le=100, description=f"Snapshot generations kept ({GENERATIONS_ENV}).")
    min_interval_s: int = Field(
        default=60, ge=0, le=86_400, description=f"Least seconds between two requested refreshes ({MIN_INTERVAL_ENV})."
    )
    lock_timeout_s: int = Field(
        default=10, ge=1, le=3_600, description=f"PostgreSQL: wait for analysts' view locks ({LOCK_TIMEOUT_ENV})."
    )

    @classmethod
    def from_settings(cls, settings: AnalystSettings) -> AnalystResource:
        return cls(
            generations=settings.generations,
            min_interval_s=settings.min_interval_s,
            lock_timeout_s=settings.lock_timeout_s,
        )
