"""Analyst views: one asset per view (refreshed, and on DuckDB published as a read-only snapshot), their job,
the sensor that refreshes them after syncs, and the patient reference check."""

from pipelines.defs.analyst.sensors import defs

__all__ = ["defs"]
