"""Freshness per connection: asset checks that fail while connections are overdue for their schedule."""

from pipelines.defs.freshness.checks import configured_defs, defs

__all__ = ["configured_defs", "defs"]
