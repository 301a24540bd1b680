"""The backoff of retries of failed syncs from ``EHRSYNC_RETRY_BASE_SECONDS`` (default 300) and
``EHRSYNC_RETRY_CAP_SECONDS`` (default 21600), apart from the failure streaks it is applied to (``engine.retries``,
which reads the app database): the settings parse it without loading the engine's models (issue 14)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from engine.env_numbers import whole_number
from engine.errors import PipelineConfigurationError
from engine.scheduling import RetryBackoff

__all__ = ["DEFAULT_BASE_S", "DEFAULT_CAP_S", "MAX_S", "RETRY_BASE_ENV", "RETRY_CAP_ENV", "backoff_from_env"]

RETRY_BASE_ENV = "EHRSYNC_RETRY_BASE_SECONDS"
RETRY_CAP_ENV = "EHRSYNC_RETRY_CAP_SECONDS"
DEFAULT_BASE_S = 300
DEFAULT_CAP_S = 6 * 3600
MAX_S = 7 * 24 * 3600


def _seconds(env: Mapping[str, str], name: str, default: int) -> int:
    return whole_number(env, name, default, 1, MAX_S, "seconds")


def backoff_from_env(env: Mapping[str, str]) -> RetryBackoff:
    """The retry backoff from ``env`` (``engine.settings`` passes the settings' values); a malformed value raises
    naming the variable."""
    base = _seconds(env, RETRY_BASE_ENV, DEFAULT_BASE_S)
    cap = _seconds(env, RETRY_CAP_ENV, max(DEFAULT_CAP_S, base))
    if cap < base:
        raise PipelineConfigurationError(f"{RETRY_CAP_ENV}={cap} is below {RETRY_BASE_ENV}={base}")
    return RetryBackoff(base=timedelta(seconds=base), cap=timedelta(seconds=cap))
