"""The write-back's own settings as a Dagster resource: the service-wide switch and the retry bounds."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from engine.writeback import WritebackConfig

__all__ = ["WritebackResource"]

_DEFAULTS = WritebackConfig()


class WritebackResource(ConfigurableResource["WritebackResource"]):
    """``service_write_enabled`` is ``SMART_ENABLE_WRITE`` (read once with the settings); off, every note is
    ``blocked`` with ``WRITE_NOT_SUPPORTED (vendor_disabled)`` and nothing is sent."""

    service_write_enabled: bool = Field(default=False, description="SMART_ENABLE_WRITE")
    max_attempts: int = Field(default=_DEFAULTS.max_attempts, ge=1, le=50)
    backoff_base_s: float = Field(default=_DEFAULTS.backoff_base_s, ge=0)
    backoff_cap_s: float = Field(default=_DEFAULTS.backoff_cap_s, ge=0)
    inline_max_bytes: int = Field(default=_DEFAULTS.inline_max_bytes, ge=1)
    stalled_after_s: float = Field(default=_DEFAULTS.stalled_after_s, gt=0)

    def config(self) -> WritebackConfig:
        return WritebackConfig(
            service_write_enabled=self.service_write_enabled,
            max_attempts=self.max_attempts,
            backoff_base_s=self.backoff_base_s,
            backoff_cap_s=self.backoff_cap_s,
            inline_max_bytes=self.inline_max_bytes,
            stalled_after_s=self.stalled_after_s,
        )
