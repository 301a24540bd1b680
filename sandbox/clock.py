"""The server clock: real UTC time plus an admin-controlled shift (SAL-42 clock-skew tests)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sandbox.data.timefmt import instant_of, leap_instant_of


class Clock:
    def __init__(self, shift_s: float = 0.0, leap_second: bool = False) -> None:
        self.shift_s = shift_s
        self.leap_second = leap_second  # setting clock_leap_second

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.shift_s)

    def stamp(self, moment: datetime | None = None) -> str:
        """``moment`` (default: now) as the FHIR instant this server stamps: in the leap second ending the minute
        before it (``hh:mm:60.fffZ``) while ``leap_second`` is set."""
        moment = moment or self.now()
        return leap_instant_of(moment) if self.leap_second else instant_of(moment)

    def timestamp(self) -> float:
        return time.time() + self.shift_s
