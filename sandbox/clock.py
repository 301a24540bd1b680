"""The server clock: real UTC time plus an admin-controlled shift (SAL-42 clock-skew tests)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self, shift_s: float = 0.0) -> None:
        self.shift_s = shift_s

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.shift_s)

    def timestamp(self) -> float:
        return time.time() + self.shift_s
