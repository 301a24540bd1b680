"""Maintenance: weekly deletion reconciliation (BDX-31), and Dagster run storage pruned by age (run retention)."""

from pipelines.defs.maintenance.jobs import defs
from pipelines.defs.maintenance.run_retention import run_retention_defs as configured_defs

__all__ = ["configured_defs", "defs"]
