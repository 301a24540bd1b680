"""The limits on one bulk file's download and their variables, apart from the download (``files``): the
settings check them at start without loading httpx and the FHIR session (issue 14)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from connectors.budgets import env_number
from connectors.errors import ConfigurationError
from connectors.transport.low_speed import LowSpeedLimit

__all__ = [
    "DEFAULT_FILE_DEADLINE_S",
    "DEFAULT_LOW_SPEED",
    "DEFAULT_MAX_FILE_BYTES",
    "FILE_DEADLINE_ENV",
    "LOW_SPEED_RATE_ENV",
    "LOW_SPEED_WINDOW_ENV",
    "MAX_FILES_ENV",
    "MAX_MANIFEST_FILES",
    "file_deadline_from_env",
    "low_speed_from_env",
]

#: The most one file may hold, decoded (EHRSYNC_BULK_MAX_FILE_BYTES in the engine): a library caller that names no
#: limit still gets one, on disk and on the wire.
DEFAULT_MAX_FILE_BYTES = 10 * 1024**3
#: A file body averaging under 1 KiB/s over two minutes is cut off and fetched again (curl's ``--speed-limit``
#: and ``--speed-time``); a body sending nothing at all is the read timeout's.
DEFAULT_LOW_SPEED = LowSpeedLimit(bytes_per_s=1024.0, window_s=120.0)
LOW_SPEED_RATE_ENV = "EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S"
LOW_SPEED_WINDOW_ENV = "EHRSYNC_BULK_LOW_SPEED_WINDOW_S"
#: The most one file's download may take, every attempt together (curl's ``--max-time`` beside its speed limit):
#: 24 h, in which a file at the 10 GiB limit (DEFAULT_MAX_FILE_BYTES) arrives at 121 KiB/s (about 1 Mbit/s), so a
#: healthy link, even a slow one, never meets it; a server trickling just above 1 KiB/s is cut off after ~85 MiB,
#: not after the 121 days it takes to reach 10 GiB.
DEFAULT_FILE_DEADLINE_S = 86400.0
FILE_DEADLINE_ENV = "EHRSYNC_BULK_FILE_DEADLINE_S"
#: The most files (``output``, ``error`` and ``deleted`` together, every page) one export lands unless told otherwise
#: (EHRSYNC_BULK_MAX_FILES in the engine; ``connectors.bulk.manifest`` says what each file costs).
MAX_MANIFEST_FILES = 20_000
MAX_FILES_ENV = "EHRSYNC_BULK_MAX_FILES"


def low_speed_from_env(env: Mapping[str, str] | None = None) -> LowSpeedLimit | None:
    """The low-speed limit ``env`` (else ``os.environ``) sets: ``EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S`` (0 turns it
    off) averaged over ``EHRSYNC_BULK_LOW_SPEED_WINDOW_S``, each defaulting to :data:`DEFAULT_LOW_SPEED`'s; a bad
    value is a ConfigurationError naming it."""
    rate = _off_or_positive(LOW_SPEED_RATE_ENV, DEFAULT_LOW_SPEED.bytes_per_s, env)
    window = env_number(LOW_SPEED_WINDOW_ENV, DEFAULT_LOW_SPEED.window_s, env=env)
    return LowSpeedLimit(rate, window) if rate > 0 else None


def file_deadline_from_env(env: Mapping[str, str] | None = None) -> float | None:
    """``EHRSYNC_BULK_FILE_DEADLINE_S`` of ``env`` (else ``os.environ``): seconds one file's download may take,
    every attempt together (default :data:`DEFAULT_FILE_DEADLINE_S`; 0: no limit, None); a bad value is a
    ConfigurationError naming it."""
    seconds = _off_or_positive(FILE_DEADLINE_ENV, DEFAULT_FILE_DEADLINE_S, env)
    return seconds if seconds > 0 else None


def _off_or_positive(name: str, default: float, env: Mapping[str, str] | None) -> float:
    """A limit 0 turns off: 0 or a finite positive number, else one rule for every bad value (``nan`` and ``inf``
    were told the reader's internal bound, "greater than -inf")."""
    try:
        value = env_number(name, default, minimum=-math.inf, env=env)
    except ConfigurationError:
        value = math.nan
    if not value >= 0:
        raw = (os.environ if env is None else env).get(name, "").strip()
        raise ConfigurationError(f"{name} must be 0 (no limit) or a finite positive number, got {raw[:40]!r}")
    return value
