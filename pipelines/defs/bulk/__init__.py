"""Bulk ``$export`` for backend-services and group connections: one asset per connection partition."""

from pipelines.defs.bulk.assets import defs

__all__ = ["defs"]
