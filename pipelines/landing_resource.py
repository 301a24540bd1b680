"""``LandingZoneResource``: where a step lands raw NDJSON and attachments, with the limits read at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from connectors.bulk.file_limits import DEFAULT_LOW_SPEED
from connectors.transport import LowSpeedLimit
from engine.connection_lock import MAX_LOCK_WAIT_S
from engine.setting_defaults import DEFAULT_LANDING_RETENTION_DAYS, MAX_LANDING_RETENTION_DAYS
from warehouse import AttachmentStore, LandingZone
from warehouse.limits import MAX_RESOURCE_BYTES_CEILING

__all__ = ["LandingZoneResource", "unset_field"]


def unset_field(description: str, *, gt: float | None = None, ge: float | None = None, le: float | None = None) -> Any:
    """An optional setting: None keeps the library's default; ``default_resources`` fills it from the settings.
    Its bounds are its variable's, so a run's config takes no value the variable refuses: a bounded setting is a
    number, and finite (an infinite budget or wait is no variable's value)."""
    if gt is None and ge is None and le is None:  # text: a key, a path
        return Field(default=None, description=description)
    return Field(default=None, description=description, gt=gt, ge=ge, le=le, allow_inf_nan=False)


class LandingZoneResource(ConfigurableResource["LandingZoneResource"]):
    """Where raw NDJSON becomes Parquet (``<root>/landing``) and attachments are stored by content hash."""

    root: str = Field(description="Landing zone directory (<state>/landing).")
    attachments_root: str = Field(description="Attachment store directory (<state>/attachments).")
    # None: the engine's default (``SyncEnvironment``); ``default_resources`` sets them from the settings.
    step_budget_s: float | None = unset_field("Seconds one type's landing may take (EHRSYNC_STEP_BUDGET_S).", gt=0)
    bulk_max_file_bytes: int | None = unset_field("Largest bulk file downloaded (EHRSYNC_BULK_MAX_FILE_BYTES).", gt=0)
    bulk_max_files: int | None = unset_field("Most files one Bulk export lands (EHRSYNC_BULK_MAX_FILES).", ge=1)
    bulk_merge_group_bytes: int | None = unset_field(
        "Landed Bulk files merged per warehouse transaction (EHRSYNC_BULK_MERGE_GROUP_BYTES).", ge=1
    )
    bulk_low_speed_bytes_per_s: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Bytes per second a bulk file's body must average over the window; 0: no limit "
        "(EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S).",
    )
    bulk_low_speed_window_s: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Seconds a bulk file's speed is averaged over (EHRSYNC_BULK_LOW_SPEED_WINDOW_S).",
    )
    bulk_file_deadline_s: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Seconds one bulk file's download may take, every attempt together; 0: no limit "
        "(EHRSYNC_BULK_FILE_DEADLINE_S).",
    )
    min_free_disk_bytes: int | None = unset_field(
        "Disk a download leaves free; 0: no check (EHRSYNC_MIN_FREE_DISK_BYTES).", ge=0
    )
    max_resource_bytes: int | None = unset_field(
        "Largest resource landed (EHRSYNC_MAX_RESOURCE_BYTES).", ge=1024, le=MAX_RESOURCE_BYTES_CEILING
    )
    lock_wait_s: float | None = unset_field(
        "Wait for a busy connection (EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS).", ge=0, le=MAX_LOCK_WAIT_S
    )
    retention_days: int = Field(
        default=DEFAULT_LANDING_RETENTION_DAYS,
        ge=0,
        le=MAX_LANDING_RETENTION_DAYS,
        description="Days merged landing files are kept (EHRSYNC_LANDING_RETENTION_DAYS).",
    )

    def limits(self) -> dict[str, Any]:
        """The limits set here, as ``SyncEnvironment`` keyword arguments."""
        names = (
            "step_budget_s",
            "bulk_max_file_bytes",
            "bulk_max_files",
            "bulk_merge_group_bytes",
            "min_free_disk_bytes",
            "lock_wait_s",
        )
        found = {name: value for name in names if (value := getattr(self, name)) is not None}
        rate, window = self.bulk_low_speed_bytes_per_s, self.bulk_low_speed_window_s
        if rate is not None or window is not None:
            rate = DEFAULT_LOW_SPEED.bytes_per_s if rate is None else rate
            window = DEFAULT_LOW_SPEED.window_s if window is None else window
            found["bulk_low_speed"] = LowSpeedLimit(rate, window) if rate > 0 else None
        if self.bulk_file_deadline_s is not None:
            found["bulk_file_deadline_s"] = self.bulk_file_deadline_s or None
        return found

    def zone(self) -> LandingZone:
        return LandingZone(Path(self.root), max_resource_bytes=self.max_resource_bytes)

    def attachments(self) -> AttachmentStore:
        return AttachmentStore(Path(self.attachments_root))
