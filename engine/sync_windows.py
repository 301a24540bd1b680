"""Preferred sync time windows per EHR source (``EHRSYNC_SYNC_WINDOWS``).

A busy clinic's EHR should be read at night: a window like ``"22:00-06:00"`` (UTC unless a zone
follows, e.g. ``"22:00-06:00 America/Chicago"``) limits when scheduled syncs may start. Windows may wrap
past midnight; ``"00:00-24:00"`` means always. A source without a window may sync at any time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from engine.errors import PipelineConfigurationError

__all__ = ["SyncWindow", "parse_sync_windows", "parse_window"]

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*(?:\s(\S+))?\s*$")
_DAY_MINUTES = 24 * 60


@dataclass(frozen=True)
class SyncWindow:
    """A daily window ``[start, end)`` in minutes after local midnight, in zone ``tz``."""

    start_minute: int
    end_minute: int
    tz: tzinfo = UTC

    def contains(self, moment: datetime) -> bool:
        """True when ``moment`` (timezone-aware) falls inside the window in the window's zone."""
        if moment.tzinfo is None:
            raise ValueError("SyncWindow.contains needs a timezone-aware datetime")
        local = moment.astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        if self.start_minute == self.end_minute:
            return False
        if self.start_minute < self.end_minute:
            return self.start_minute <= minute < self.end_minute
        return minute >= self.start_minute or minute < self.end_minute

    def describe(self) -> str:
        return f"{_hhmm(self.start_minute)}-{_hhmm(self.end_minute)} {self.tz}"


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def parse_window(text: str) -> SyncWindow:
    """Parse ``"HH:MM-HH:MM[ Zone/Name]"``; raises ``PipelineConfigurationError`` naming the bad part."""
    match = _WINDOW.match(text)
    if match is None:
        raise PipelineConfigurationError(
            f"sync window {text!r} is not 'HH:MM-HH:MM' optionally followed by a time zone"
        )
    sh, sm, eh, em, zone = match.groups()
    start, end = int(sh) * 60 + int(sm), int(eh) * 60 + int(em)
    for minute, hh, mm in ((start, sh, sm), (end, eh, em)):
        if int(mm) > 59 or minute > _DAY_MINUTES:
            raise PipelineConfigurationError(f"sync window {text!r}: {hh}:{mm} is not a time of day")
    if start == _DAY_MINUTES:
        raise PipelineConfigurationError(f"sync window {text!r}: a window cannot start at 24:00")
    tz: tzinfo = UTC
    if zone is not None and zone.upper() not in ("UTC", "Z"):
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise PipelineConfigurationError(f"sync window {text!r}: unknown time zone {zone!r}") from exc
    if start == end:
        raise PipelineConfigurationError(f"sync window {text!r} is empty (start equals end)")
    return SyncWindow(start, end, tz)


def parse_sync_windows(raw: str | None) -> dict[str, SyncWindow]:
    """Parse ``EHRSYNC_SYNC_WINDOWS`` (a JSON object ``{"source": "HH:MM-HH:MM"}``); empty or unset means none."""
    if raw is None or not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PipelineConfigurationError(f"EHRSYNC_SYNC_WINDOWS is not valid JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise PipelineConfigurationError('EHRSYNC_SYNC_WINDOWS must be a JSON object like {"epic": "22:00-06:00"}')
    if twice := _named_twice(raw):  # the JSON readers keep the last: the operator's other window went unsaid
        raise PipelineConfigurationError(f"EHRSYNC_SYNC_WINDOWS names {twice!r} more than once (one window per source)")
    windows: dict[str, SyncWindow] = {}
    known = _source_ids() if data else ()
    for source, value in data.items():
        if source not in known:  # a typo's window would be ignored, and the source synced at any hour
            names = ", ".join(sorted(known))
            raise PipelineConfigurationError(
                f"EHRSYNC_SYNC_WINDOWS[{source!r}]: no EHR source is called so (known: {names})"
            )
        if not isinstance(value, str):
            raise PipelineConfigurationError(f"EHRSYNC_SYNC_WINDOWS[{source!r}] must be a string 'HH:MM-HH:MM'")
        try:
            windows[str(source)] = parse_window(value)
        except PipelineConfigurationError as exc:
            raise PipelineConfigurationError(f"EHRSYNC_SYNC_WINDOWS[{source!r}]: {exc.message}") from None
    return windows


def _named_twice(raw: str) -> str | None:
    """A key the top-level object of ``raw`` (valid JSON) names twice, or None (the outer object is read last)."""
    found: list[str | None] = []

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        keys = [key for key, _ in items]
        found.append(next((key for index, key in enumerate(keys) if key in keys[:index]), None))
        return dict(items)

    json.loads(raw, object_pairs_hook=pairs)
    return found[-1] if found else None


def _source_ids() -> tuple[str, ...]:
    """The provider ids a connection can have (a window is looked up by ``connections.provider_id``); imported
    here so that loading settings without windows does not load every vendor plugin."""
    from connectors.providers.registry import TENANT_SMART_PROVIDER_ID, all_providers

    return (*(p.id for p in all_providers()), TENANT_SMART_PROVIDER_ID)
