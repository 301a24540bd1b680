"""Fast FHIR instant formatting: the bulk hot path formats millions of timestamps."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import cache

_EPOCH = date(1970, 1, 1)

#: Base data is anchored before any plausible server start so generated history lies in the past.
ANCHOR_TS = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp())
DAY = 86_400
YEAR = 365 * DAY


@cache
def day_str(days: int) -> str:
    """``YYYY-MM-DD`` for a day number since the epoch (cached: few distinct days)."""
    return (_EPOCH + timedelta(days=days)).isoformat()


def instant(ts: int) -> str:
    """A FHIR instant with millisecond precision and ``Z``; one fixed width so strings sort chronologically."""
    d, rem = divmod(ts, DAY)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{day_str(d)}T{h:02d}:{m:02d}:{s:02d}.000Z"


def instant_of(dt: datetime) -> str:
    """The same fixed-width rendering for an aware datetime (server-clock timestamps)."""
    u = dt.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"


def leap_instant_of(dt: datetime) -> str:
    """The leap second that ends the minute before ``dt``, with ``dt``'s milliseconds (``hh:mm:60.fffZ``): never
    later than ``dt``, in the same fixed width, so it sorts among other stamps as the moment it names."""
    u = dt.astimezone(UTC)
    minute_before = u.replace(second=0, microsecond=0) - timedelta(minutes=1)
    return minute_before.strftime("%Y-%m-%dT%H:%M:60.") + f"{u.microsecond // 1000:03d}Z"


def parse_instant(value: str) -> datetime:
    """Parse a FHIR dateTime/instant (date-only and partial forms allowed); naive values are taken as UTC."""
    text = value.strip()
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
