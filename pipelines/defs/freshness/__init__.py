"""Freshness per connection: asset checks that fail while connections are overdue for their schedule."""

from pipelines.defs.freshness.checks import defs

__all__ = ["defs"]
