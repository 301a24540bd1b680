"""The byte counts a run's environment reads from the process (``SyncEnvironment``'s defaults) and the ones the
settings check at start come from one table, ``engine.setting_defaults.ENGINE_BYTES``: the same default, the same
minimum, the same message for a bad value. They were written out twice (``engine/settings.py`` and
``engine/environment.py``), free to drift apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.errors import ConfigurationError
from engine.errors import PipelineConfigurationError
from engine.setting_defaults import ENGINE_BYTES
from engine.settings import PipelineSettings
from tests.engine.helpers import make_environment

# the variables a run's environment reads itself when nothing passes it a value, and where it keeps them
_READ_BY_A_RUN = {
    "EHRSYNC_BULK_MAX_FILE_BYTES": "bulk_max_file_bytes",
    "EHRSYNC_MIN_FREE_DISK_BYTES": "min_free_disk_bytes",
}


@pytest.mark.parametrize("name", sorted(_READ_BY_A_RUN))
def test_a_run_and_the_settings_read_a_byte_count_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    attribute = _READ_BY_A_RUN[name]
    default, minimum, what = ENGINE_BYTES[name]
    readings = [(None, default), ("", default), (" 4096 ", 4096), (str(minimum), minimum)]
    for step, (raw, expected) in enumerate(readings):
        if raw is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, raw)
        run = make_environment(tmp_path / f"run-{step}").env
        settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path), name: raw or ""}).limits
        assert getattr(run, attribute) == getattr(settings, attribute) == expected
    below = str(minimum - 1)
    monkeypatch.setenv(name, below)
    with pytest.raises(ConfigurationError) as in_a_run:
        make_environment(tmp_path / "refused")
    with pytest.raises(PipelineConfigurationError) as at_start:
        PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path), name: below})
    assert (
        str(in_a_run.value)
        == str(at_start.value)
        == f"{name}={below!r} is not a whole number of at least {minimum} ({what})"
    )
