"""The Dagster instance ehrsync runs against: a persistent ``DAGSTER_HOME`` under the state directory.

``make demo`` / ``ehrsync sync`` execute in-process and ``make ui`` starts the webserver and daemon; all of
them use the same ``<state>/dagster_home`` so runs of one show up in the other. The instance settings
(run queue limits per EHR source) ship as ``pipelines/dagster_home/dagster.yaml``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from dagster import DagsterInstance

from engine.settings import PipelineSettings

__all__ = ["SHIPPED_DAGSTER_YAML", "WORKSPACE_YAML", "open_instance", "prepare_dagster_home", "ui_command"]

SHIPPED_DAGSTER_YAML = Path(__file__).resolve().parent / "dagster_home" / "dagster.yaml"
WORKSPACE_YAML = Path(__file__).resolve().parent.parent / "workspace.yaml"


def prepare_dagster_home(home: Path) -> Path:
    """Create ``home`` and install the shipped ``dagster.yaml`` into it (refreshed when ours changed)."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists() or target.read_bytes() != SHIPPED_DAGSTER_YAML.read_bytes():
        shutil.copyfile(SHIPPED_DAGSTER_YAML, target)
    return home


def open_instance(settings: PipelineSettings | None = None) -> DagsterInstance:
    """``DAGSTER_HOME`` when set (the operator chose), else ``<state>/dagster_home`` prepared as above."""
    if os.environ.get("DAGSTER_HOME"):
        return DagsterInstance.get()
    resolved = settings or PipelineSettings.from_env()
    home = prepare_dagster_home(resolved.dagster_home)
    return DagsterInstance.from_config(str(home))


def ui_command(
    settings: PipelineSettings, *, host: str = "127.0.0.1", port: int = 3000
) -> tuple[list[str], dict[str, str]]:
    """argv and environment for ``dagster dev`` (webserver + daemon) over the state directory.

    Start it in its own process group and stop it with SIGINT to the group: the webserver, daemon and
    code server are children that outlive a killed parent.
    """
    home = prepare_dagster_home(settings.dagster_home)
    env = {**os.environ, "DAGSTER_HOME": str(home), "EHRSYNC_STATE_DIR": str(settings.state_dir)}
    argv = [sys.executable, "-m", "dagster", "dev", "-w", str(WORKSPACE_YAML), "-h", host, "-p", str(port)]
    return argv, env
