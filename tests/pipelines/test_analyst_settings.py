"""The analyst views' settings: defaults, and a malformed value stops the start with one line naming it."""

from __future__ import annotations

import pytest

from engine.analyst_settings import AnalystSettings
from engine.errors import PipelineConfigurationError
from engine.settings import PipelineSettings
from pipelines.analyst_resource import AnalystResource
from pipelines.resources import default_resources


def test_defaults_and_values_reach_the_resource(tmp_path: object) -> None:
    assert PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path)}).analyst == AnalystSettings(3, 60, 10)
    env = {
        "EHRSYNC_STATE_DIR": str(tmp_path),
        "EHRSYNC_ANALYST_GENERATIONS": "5",
        "EHRSYNC_ANALYST_MIN_INTERVAL_SECONDS": "0",
        "EHRSYNC_ANALYST_LOCK_TIMEOUT_SECONDS": "30",
    }
    analyst = default_resources(PipelineSettings.from_env(env))["analyst"]
    assert isinstance(analyst, AnalystResource)
    assert (analyst.generations, analyst.min_interval_s, analyst.lock_timeout_s) == (5, 0, 30)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EHRSYNC_ANALYST_GENERATIONS", "0"),
        ("EHRSYNC_ANALYST_GENERATIONS", "three"),
        ("EHRSYNC_ANALYST_MIN_INTERVAL_SECONDS", "-1"),
        ("EHRSYNC_ANALYST_LOCK_TIMEOUT_SECONDS", "0"),
        ("EHRSYNC_ANALYST_LOCK_TIMEOUT_SECONDS", "1.5"),
    ],
)
def test_a_malformed_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(PipelineConfigurationError, match=name):
        PipelineSettings.from_env({name: value})
