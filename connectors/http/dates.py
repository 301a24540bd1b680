"""Dates on the wire: RFC 9110 HTTP-dates, FHIR instants and ``Retry-After`` (seconds or HTTP-date)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from connectors.instants import clamp_leap_second

__all__ = ["parse_http_date", "parse_instant", "parse_retry_after"]


def parse_http_date(value: str | None) -> datetime | None:
    """An RFC 9110 HTTP-date (``Date``, ``Expires``, ``Retry-After``) as aware UTC, or None if unparseable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):  # Overflow: a year past any C long, the server's text
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_instant(value: object) -> datetime | None:
    """A FHIR ``instant``/``dateTime`` with a timezone as aware UTC; None when absent, partial or zone-less.

    A leap second (``23:59:60Z``, ``:60.5+01:00``) is ``:59.999999`` of its minute, its zone kept
    (``connectors.instants.clamp_leap_second``: never later than the moment it names, so a mark or ``_since``
    taken from it never passes data not yet received)."""
    if not isinstance(value, str) or "T" not in value:
        return None
    text = clamp_leap_second(value.strip())
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    Returns None when the value is missing, unparseable, negative or a date in the past, so the caller
    falls back to its own backoff (BDX-10). Clamping is the policy's job, not the parser's.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        when = parse_http_date(text)
        if when is None:
            return None
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
        return seconds if seconds > 0 else None
    if seconds != seconds or seconds < 0 or seconds == float("inf"):  # NaN, negative, infinite
        return None
    return seconds
