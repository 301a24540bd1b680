"""Daily grant keepalive (issue 4): refresh patient/user grants nobody used lately, before the EHR drops them."""

from pipelines.defs.keepalive.jobs import defs

__all__ = ["defs"]
