"""``ehrsync ui`` / ``ehrsync sync`` use ``DAGSTER_HOME`` when the operator set it and never overwrite an
operator's ``dagster.yaml`` (before, the shipped file replaced any other on every start)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ehrsync.dagster_instance import SHIPPED_DAGSTER_YAML, open_instance, prepare_dagster_home, ui_command
from engine.settings import PipelineSettings

OPERATOR_YAML = b"# the operator's instance settings\nrun_monitoring:\n  enabled: false\n"


def test_ui_honours_dagster_home_and_keeps_the_operators_dagster_yaml(tmp_path: Path) -> None:
    home = tmp_path / "operator_home"
    home.mkdir()
    (home / "dagster.yaml").write_bytes(OPERATOR_YAML)
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state"), "DAGSTER_HOME": str(home)})

    _argv, env = ui_command(settings, port=3999)

    assert env["DAGSTER_HOME"] == str(home.resolve())
    assert (home / "dagster.yaml").read_bytes() == OPERATOR_YAML
    assert not (tmp_path / "state" / "dagster_home").exists()
    with open_instance(settings) as instance:
        assert instance.root_directory == str(home.resolve())
        assert not instance.run_monitoring_enabled  # the operator's setting, not ours
    assert (home / "dagster.yaml").read_bytes() == OPERATOR_YAML


def test_without_dagster_home_the_state_gets_the_shipped_settings(tmp_path: Path) -> None:
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path)})
    _, env = ui_command(settings)
    assert env["DAGSTER_HOME"] == str(tmp_path.resolve() / "dagster_home")
    assert (tmp_path / "dagster_home" / "dagster.yaml").read_bytes() == SHIPPED_DAGSTER_YAML.read_bytes()


def test_an_empty_operator_home_gets_the_shipped_file_once(tmp_path: Path) -> None:
    home = prepare_dagster_home(tmp_path / "home")
    assert (home / "dagster.yaml").read_bytes() == SHIPPED_DAGSTER_YAML.read_bytes()
    (home / "dagster.yaml").write_bytes(OPERATOR_YAML)  # the operator edits it afterwards
    prepare_dagster_home(home)
    assert (home / "dagster.yaml").read_bytes() == OPERATOR_YAML


def test_a_file_ehrsync_installed_is_refreshed_when_the_shipped_one_changes(tmp_path: Path) -> None:
    """An older shipped version (still unedited, as its mark records) is replaced by the current one."""
    import hashlib

    from ehrsync.dagster_instance import INSTALLED_MARK

    home = tmp_path / "home"
    home.mkdir()
    older = b"# an older ehrsync dagster.yaml\n"
    (home / "dagster.yaml").write_bytes(older)
    (home / INSTALLED_MARK).write_text(hashlib.sha256(older).hexdigest() + "\n")
    prepare_dagster_home(home)
    assert (home / "dagster.yaml").read_bytes() == SHIPPED_DAGSTER_YAML.read_bytes()


# ``pipelines/dagster_home/dagster.yaml`` as ehrsync shipped it before the mark file existed (commit aa60101).
EARLIER_SHIPPED_YAML = b"""\
# ehrsync's Dagster instance settings. pipelines.instance.prepare_dagster_home copies this file into
# <state>/dagster_home/ (DAGSTER_HOME), where run, event and schedule storage live as SQLite files, so the
# runs of `ehrsync sync` / `make demo` show up in `make ui` afterwards.

# Run queue (used by `dagster dev` / the daemon; in-process runs of `ehrsync sync` are not queued).
concurrency:
  runs:
    # At most this many syncs at once on this machine.
    max_concurrent_runs: 4
    tag_concurrency_limits:
      # Per EHR source (provider id: epic, cerner, ...): a busy clinic's server is not hammered.
      - key: ehrsync/source
        value:
          applyLimitPerUniqueValue: true
        limit: 2
      # One run per connection at a time: two syncs of one patient would race for the same cursors.
      - key: ehrsync/connection
        value:
          applyLimitPerUniqueValue: true
        limit: 1

# A run whose process died is marked failed, so the scheduler does not wait forever on a "busy" connection.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 60

# Sensors evaluate in the daemon; keep their work small and bounded.
sensors:
  use_threads: false

telemetry:
  enabled: false
"""


def test_a_file_an_earlier_ehrsync_installed_without_a_mark_is_refreshed(tmp_path: Path) -> None:
    """Earlier versions installed dagster.yaml without a mark: their unedited file is still ehrsync's."""
    import hashlib

    from ehrsync.dagster_instance import INSTALLED_MARK

    assert hashlib.sha256(EARLIER_SHIPPED_YAML).hexdigest().startswith("462203155b04")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_bytes(EARLIER_SHIPPED_YAML)
    prepare_dagster_home(home)
    shipped = SHIPPED_DAGSTER_YAML.read_bytes()
    assert (home / "dagster.yaml").read_bytes() == shipped
    assert (home / INSTALLED_MARK).read_text().strip() == hashlib.sha256(shipped).hexdigest()


def test_a_mapping_ignores_the_operators_dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built from a mapping use its values only: DAGSTER_HOME in the process is not read."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "operator_home"))
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state")})
    assert settings.dagster_home == (tmp_path / "state").resolve() / "dagster_home"
