"""Weekly deletion reconciliation (BDX-31): REST search never reports deletes, so compare id lists."""

from pipelines.defs.maintenance.jobs import defs

__all__ = ["defs"]
