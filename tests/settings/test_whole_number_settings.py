"""Every whole-number setting read at start goes through ``engine.env_numbers.whole_number``: a value that is not a
plain ASCII whole number in range stops the start with one line naming the variable, never a traceback.

``EHRSYNC_SYNC_OVERLAP_SECONDS`` used to accept anything ``str.isdigit`` accepts, so ``"²"`` passed the check and
then crashed in ``int()`` with a bare ``ValueError``."""

from __future__ import annotations

from datetime import timedelta
from operator import attrgetter
from pathlib import Path

import pytest

from engine.batch_size import MAX_BATCH_SIZE
from engine.errors import PipelineConfigurationError
from engine.freshness import MAX_GRACE_MINUTES
from engine.retry_backoff import MAX_S
from engine.run_retention import MAX_RUN_RETENTION_DAYS
from engine.setting_defaults import MAX_LANDING_RETENTION_DAYS
from engine.settings import MAX_KEEPALIVE_IDLE_DAYS, PipelineSettings

# variable, an accepted value, where the settings keep it, the value read, the inclusive bounds
_SETTINGS = [
    ("EHRSYNC_SYNC_OVERLAP_SECONDS", "0", "overlap_seconds", 0, 0, 86_400),
    ("EHRSYNC_KEEPALIVE_IDLE_DAYS", " 30 ", "keepalive_idle_days", 30, 1, MAX_KEEPALIVE_IDLE_DAYS),
    ("EHRSYNC_LANDING_RETENTION_DAYS", "0", "landing_retention_days", 0, 0, MAX_LANDING_RETENTION_DAYS),
    ("EHRSYNC_SYNC_BATCH_SIZE", "1000", "sync_batch_size", 1000, 1, MAX_BATCH_SIZE),
    ("EHRSYNC_FRESHNESS_GRACE_MINUTES", "15", "freshness_grace_minutes", 15, 0, MAX_GRACE_MINUTES),
    ("EHRSYNC_RUN_RETENTION_DAYS", "1", "run_retention.days", 1, 1, MAX_RUN_RETENTION_DAYS),
    ("EHRSYNC_RETRY_BASE_SECONDS", "60", "retry_backoff.base", timedelta(seconds=60), 1, MAX_S),
    ("EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS", "0", "limits.lock_wait_s", 0.0, 0, 86_400),
]
# An empty value is unset, its default (tests/settings/test_empty_values.py), not a malformed one.
_BAD = ["²", "١٢", "-1", "+5", "1.5", "5s", "1e3", "soon"]
_MALFORMED = [(row[0], bad) for row in _SETTINGS for bad in _BAD]


def _load(tmp_path: Path, name: str, value: str) -> PipelineSettings:
    return PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path), name: value})


@pytest.mark.parametrize(("name", "value", "attribute", "expected", "low", "high"), _SETTINGS)
def test_a_plain_whole_number_in_range_loads(
    tmp_path: Path, name: str, value: str, attribute: str, expected: object, low: int, high: int
) -> None:
    assert attrgetter(attribute)(_load(tmp_path, name, value)) == expected


@pytest.mark.parametrize(("name", "bad"), _MALFORMED)
def test_anything_else_names_the_variable(tmp_path: Path, name: str, bad: str) -> None:
    with pytest.raises(PipelineConfigurationError, match=f"^{name}=") as caught:
        _load(tmp_path, name, bad)
    assert "whole number" in str(caught.value)


@pytest.mark.parametrize(("name", "value", "attribute", "expected", "low", "high"), _SETTINGS)
def test_the_bounds_are_inclusive_and_one_past_them_is_refused(
    tmp_path: Path, name: str, value: str, attribute: str, expected: object, low: int, high: int
) -> None:
    _load(tmp_path, name, str(low))
    if low > 0:
        with pytest.raises(PipelineConfigurationError, match=f"^{name}='{low - 1}'"):
            _load(tmp_path, name, str(low - 1))
    _load(tmp_path, name, str(high))
    with pytest.raises(PipelineConfigurationError, match=f"^{name}='{high + 1}'"):
        _load(tmp_path, name, str(high + 1))
