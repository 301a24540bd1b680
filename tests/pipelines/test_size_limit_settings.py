"""The byte limits and the connection lock wait are checked when the settings load (issue 10), not when a step runs:
``EHRSYNC_MAX_RESPONSE_BYTES`` below ``EHRSYNC_MAX_RESOURCE_BYTES`` would fail a whole search page carrying one
resource the warehouse accepts, so it is refused up front with one line naming both variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.budgets import env_number
from connectors.errors import ConfigurationError
from engine.errors import PipelineConfigurationError
from engine.settings import ENGINE_NUMBERS, PipelineSettings

MIB = 1024 * 1024
_GOOD_KEY = "t4JTv4brtHtzKipfTJdayl_rg659i4mCNwc8JnvbEhk="


def test_defaults_and_a_response_limit_at_least_the_resource_limit_load(tmp_path: Path) -> None:
    state = {"EHRSYNC_STATE_DIR": str(tmp_path)}
    PipelineSettings.from_env(state)
    PipelineSettings.from_env({**state, "EHRSYNC_MAX_RESOURCE_BYTES": str(2 * MIB)})
    PipelineSettings.from_env(
        {**state, "EHRSYNC_MAX_RESOURCE_BYTES": str(128 * MIB), "EHRSYNC_MAX_RESPONSE_BYTES": str(128 * MIB)}
    )
    PipelineSettings.from_env({**state, "EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS": "0"})


@pytest.mark.parametrize(
    "env",
    [
        {"EHRSYNC_MAX_RESPONSE_BYTES": str(MIB)},  # below the default resource limit (64 MiB)
        {"EHRSYNC_MAX_RESOURCE_BYTES": str(128 * MIB)},  # above the default response limit (64 MiB)
        {"EHRSYNC_MAX_RESOURCE_BYTES": str(8 * MIB), "EHRSYNC_MAX_RESPONSE_BYTES": str(8 * MIB - 1)},
    ],
)
def test_a_response_limit_below_the_resource_limit_is_one_line_naming_both(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(PipelineConfigurationError) as caught:
        PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path), **env})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("EHRSYNC_MAX_RESPONSE_BYTES=") and "is below EHRSYNC_MAX_RESOURCE_BYTES=" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EHRSYNC_MAX_RESOURCE_BYTES", "lots"),
        ("EHRSYNC_MAX_RESOURCE_BYTES", "100"),
        ("EHRSYNC_MAX_RESOURCE_BYTES", str(512 * MIB)),
        ("EHRSYNC_MAX_RESPONSE_BYTES", "lots"),
        ("EHRSYNC_MAX_RESPONSE_BYTES", "0"),
        ("EHRSYNC_MAX_RESPONSE_BYTES", "nan"),
        ("EHRSYNC_MAX_RESPONSE_BYTES", "inf"),
        ("EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS", "soon"),
        ("EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS", "-1"),
        ("EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS", "100000"),
    ],
)
def test_a_malformed_limit_fails_the_settings_naming_the_variable(tmp_path: Path, name: str, value: str) -> None:
    """Before, these were read only when a landing step or a connection lock needed them: a run started and
    failed step by step instead of refusing to start."""
    with pytest.raises(PipelineConfigurationError, match=f"^{name}="):
        PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path), name: value})


def test_ehrsync_sync_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    """``ehrsync sync`` checks the settings before any run: one ``Error:`` line naming both variables, no app
    database or run touched."""
    env = {
        **os.environ,
        "INTEGRATIONS_TOKEN_ENC_KEY": _GOOD_KEY,
        "EHRSYNC_STATE_DIR": str(tmp_path / "state"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "WAREHOUSE_URL": str(tmp_path / "warehouse.duckdb"),
        "EHRSYNC_MAX_RESOURCE_BYTES": str(128 * MIB),
    }
    env.pop("EHRSYNC_MAX_RESPONSE_BYTES", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ehrsync.cli", "sync", "conn-1"], capture_output=True, text=True, timeout=120, env=env
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("Error: ") and "EHRSYNC_MAX_RESPONSE_BYTES" in lines[0], lines[0]
    assert f"EHRSYNC_MAX_RESOURCE_BYTES={128 * MIB}" in lines[0]
    assert not (tmp_path / "app.db").exists() and not (tmp_path / "state").exists()


_ENGINE_VALUES = ["soon", "0", "-1", "-0.5", "nan", "inf", "1e400", "0.5", "30", "1048576", "  12 "]


@pytest.mark.parametrize("name", sorted(ENGINE_NUMBERS))
@pytest.mark.parametrize("value", _ENGINE_VALUES)
def test_engine_numbers_are_checked_at_start_as_the_engine_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """``EHRSYNC_STEP_BUDGET_S``, ``EHRSYNC_REQUEST_DEADLINE_S``, ``EHRSYNC_BULK_MAX_FILE_BYTES`` and
    ``EHRSYNC_MIN_FREE_DISK_BYTES`` were read only by a running step: the settings refuse exactly the values the
    engine's reader (``env_number``) refuses, with one line naming the variable."""
    minimum = ENGINE_NUMBERS[name][0]
    monkeypatch.setenv(name, value)
    try:
        env_number(name, 1.0, minimum=minimum)
        engine_accepts = True
    except ConfigurationError:
        engine_accepts = False
    settings = {"EHRSYNC_STATE_DIR": str(tmp_path), name: value}
    if engine_accepts:
        PipelineSettings.from_env(settings)
    else:
        with pytest.raises(PipelineConfigurationError, match=f"^{name}=") as caught:
            PipelineSettings.from_env(settings)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", sorted(ENGINE_NUMBERS))
def test_ehrsync_sync_refuses_a_bad_engine_number_with_one_line(tmp_path: Path, name: str) -> None:
    env = {
        **os.environ,
        "INTEGRATIONS_TOKEN_ENC_KEY": _GOOD_KEY,
        "EHRSYNC_STATE_DIR": str(tmp_path / "state"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "WAREHOUSE_URL": str(tmp_path / "warehouse.duckdb"),
        name: "soon",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "ehrsync.cli", "sync", "conn-1"], capture_output=True, text=True, timeout=120, env=env
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("Error: ") and f"{name}='soon' is not a finite number" in lines[0], lines[0]
    assert not (tmp_path / "app.db").exists() and not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("EHRSYNC_BULK_MAX_FILE_BYTES", "0.5", "is not a whole number of at least 1 (bytes of one bulk file)"),
        ("EHRSYNC_BULK_MAX_FILE_BYTES", "1048576.5", "is not a whole number of at least 1 (bytes of one bulk file)"),
        ("EHRSYNC_BULK_MAX_FILE_BYTES", "1e9", "is not a whole number of at least 1 (bytes of one bulk file)"),
        (
            "EHRSYNC_MIN_FREE_DISK_BYTES",
            "0.5",
            "is not a whole number of at least 0 (bytes left free on disk; 0: no check)",
        ),
        (
            "EHRSYNC_MIN_FREE_DISK_BYTES",
            "-1",
            "is not a whole number of at least 0 (bytes left free on disk; 0: no check)",
        ),
        (
            "EHRSYNC_MIN_FREE_DISK_BYTES",
            "1e9",
            "is not a whole number of at least 0 (bytes left free on disk; 0: no check)",
        ),
        ("EHRSYNC_MAX_RESPONSE_BYTES", f"{64 * MIB}.5", "is not a whole number of at least 1 (bytes of one answer"),
        ("EHRSYNC_MAX_RESPONSE_BYTES", "1e9", "is not a whole number of at least 1 (bytes of one answer"),
    ],
)
def test_a_byte_count_is_a_whole_number(tmp_path: Path, name: str, value: str, rule: str) -> None:
    """A byte count is a whole number: ``0.5`` was read as 0 bytes per bulk file (every file refused), fractions
    were cut off and ``1e9`` taken as a float; ``EHRSYNC_MIN_FREE_DISK_BYTES=-1`` said it was "not a finite number
    greater than -1". Each is one line naming the variable and its rule."""
    with pytest.raises(PipelineConfigurationError) as caught:
        PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path), name: value})
    assert str(caught.value).startswith(f"{name}={value!r} {rule}"), str(caught.value)
    assert "\n" not in str(caught.value)


def test_byte_counts_left_empty_or_padded_keep_their_reading(tmp_path: Path) -> None:
    state = {"EHRSYNC_STATE_DIR": str(tmp_path)}
    padded = PipelineSettings.from_env(
        {**state, "EHRSYNC_BULK_MAX_FILE_BYTES": " 1048576 ", "EHRSYNC_MIN_FREE_DISK_BYTES": "0"}
    ).limits
    assert (padded.bulk_max_file_bytes, padded.min_free_disk_bytes) == (MIB, 0)
    empty = PipelineSettings.from_env({**state, "EHRSYNC_BULK_MAX_FILE_BYTES": "", "EHRSYNC_MIN_FREE_DISK_BYTES": ""})
    assert empty.limits == PipelineSettings.from_env(state).limits


@pytest.mark.parametrize("name", ["EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S", "EHRSYNC_BULK_FILE_DEADLINE_S"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "abc"])
def test_a_limit_that_zero_turns_off_names_its_rule(tmp_path: Path, name: str, value: str) -> None:
    """``nan`` or ``inf`` said "must be a finite number greater than -inf" (the reader's internal bound)."""
    with pytest.raises(PipelineConfigurationError) as caught:
        PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path), name: value})
    assert str(caught.value) == f"{name} must be 0 (no limit) or a finite positive number, got {value!r}"
