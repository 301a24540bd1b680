"""The write-back's own settings as a Dagster resource: the service-wide switch, the retry bounds and the waits."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from engine.writeback import WritebackConfig

__all__ = ["WritebackResource"]

_DEFAULTS = WritebackConfig()
#: The longest wait a setting may give (a year): a next-attempt time past year 9999 raises OverflowError, and after a
#: 202 that left the note in ``sending``, for a resumed run to POST again.
_LONGEST_S = 366 * 86_400.0


def _wait(default: float, description: str) -> Any:
    """A wait in seconds: above 0 and at most a year (a zero or negative one is refused naming the field as the
    resource is built: a zero ``lookup_wait_s`` would end every identifier search before its first page)."""
    return Field(default=default, gt=0, le=_LONGEST_S, allow_inf_nan=False, description=description)


class WritebackResource(ConfigurableResource["WritebackResource"]):
    """``service_write_enabled`` is ``SMART_ENABLE_WRITE`` (read once with the settings); off, every note is
    ``blocked`` with ``WRITE_NOT_SUPPORTED (vendor_disabled)`` and nothing is sent. The rest is
    ``engine.writeback.WritebackConfig``, field for field (docs/WRITEBACK.md, "Settings").

    The switch has no default: a run's config for this resource replaces the one it was built with as a whole, and a
    default would turn writing off for that run unsaid (its note ``blocked``); it must be stated there."""

    service_write_enabled: bool = Field(description="SMART_ENABLE_WRITE (stated in a run's config too)")
    max_attempts: int = Field(default=_DEFAULTS.max_attempts, ge=1, le=50)
    backoff_base_s: float = Field(default=_DEFAULTS.backoff_base_s, ge=0, le=_LONGEST_S, allow_inf_nan=False)
    backoff_cap_s: float = Field(default=_DEFAULTS.backoff_cap_s, ge=0, le=_LONGEST_S, allow_inf_nan=False)
    retry_after_cap_s: float = _wait(_DEFAULTS.retry_after_cap_s, "Longest Retry-After (or quota reset) honoured.")
    inline_max_bytes: int = Field(default=_DEFAULTS.inline_max_bytes, ge=1)
    binary_posts_max: int = Field(
        default=_DEFAULTS.binary_posts_max, ge=1, le=50, description="Binary POSTs a note may make in all (DWB-18)."
    )
    stalled_after_s: float = _wait(_DEFAULTS.stalled_after_s, "A note unmoved in sending this long is resumed.")
    accepted_polls: int = Field(
        default=_DEFAULTS.accepted_polls, ge=1, le=1000, description="Polls of a 202's status endpoint at most."
    )
    accepted_wait_s: float = _wait(_DEFAULTS.accepted_wait_s, "Seconds a 202's status endpoint is polled in all.")
    accepted_poll_s: float = _wait(_DEFAULTS.accepted_poll_s, "Least seconds between two polls of a status endpoint.")
    lookup_wait_s: float = _wait(
        _DEFAULTS.lookup_wait_s, "Seconds one note's identifier search in a run may take in all."
    )

    def config(self) -> WritebackConfig:
        return WritebackConfig(**{f.name: getattr(self, f.name) for f in fields(WritebackConfig)})
