"""Maintenance: weekly deletion reconciliation (BDX-31), data and landing-file retention, and Dagster run storage
pruned by age (run retention).

``configured_defs`` are the definitions built from the settings (the pruning schedule's cron and default age).
"""

from dagster import Definitions

from pipelines.defs.maintenance.jobs import defs as reconcile_defs
from pipelines.defs.maintenance.retention import defs as retention_defs
from pipelines.defs.maintenance.run_retention import run_retention_defs as configured_defs

__all__ = ["configured_defs", "defs"]

# Data retention (purge of expired disconnected connections, merged landing files): maintenance/retention.py.
defs = Definitions.merge(reconcile_defs, retention_defs)
