"""The Dagster instance ehrsync runs against: ``DAGSTER_HOME`` when the operator set it, else ``<state>/dagster_home``.

``make demo`` / ``ehrsync sync`` execute in-process and ``make ui`` starts the webserver and daemon; all of
them use the same home (``PipelineSettings.dagster_home``) so runs of one show up in the other. The instance
settings (run queue limits per EHR source) ship as ``ehrsync/dagster_home/dagster.yaml``; they are installed
into a home that has no ``dagster.yaml`` and refreshed only while the file is still one ehrsync wrote, so an
operator's own ``dagster.yaml`` is never overwritten.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from dagster import DagsterInstance

from engine.settings import PipelineSettings

__all__ = [
    "CODE_LOCATION_MODULE",
    "SHIPPED_DAGSTER_YAML",
    "WORKSPACE_YAML",
    "open_instance",
    "prepare_dagster_home",
    "ui_command",
]

SHIPPED_DAGSTER_YAML = Path(__file__).resolve().parent / "dagster_home" / "dagster.yaml"
# The repository's workspace.yaml (for `dagster dev -w`); a wheel does not ship it, so ui_command loads the module.
WORKSPACE_YAML = Path(__file__).resolve().parent.parent / "workspace.yaml"
CODE_LOCATION_MODULE = "pipelines.definitions"
# Beside an installed dagster.yaml: the digest of what ehrsync wrote, so an edited file is recognised as the
# operator's and left alone.
INSTALLED_MARK = ".ehrsync-dagster-yaml.sha256"
# Digests of the dagster.yaml earlier ehrsync versions shipped, which installed it without a mark: such a file is
# still ehrsync's, so it is refreshed (and marked) like one the mark records.
EARLIER_SHIPPED_DIGESTS = frozenset({"462203155b04bcf44367bcf8b66d68e1e17e339a4fe5546b2cead5b712c90db5"})


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prepare_dagster_home(home: Path) -> Path:
    """Create ``home`` and install the shipped ``dagster.yaml`` when it has none, or refresh it when the file is
    still exactly what ehrsync installed before (its mark, or an earlier shipped version); any other
    ``dagster.yaml`` is the operator's and stays as is."""
    home.mkdir(parents=True, exist_ok=True)
    target, mark = home / "dagster.yaml", home / INSTALLED_MARK
    shipped = SHIPPED_DAGSTER_YAML.read_bytes()
    if target.exists():
        current = target.read_bytes()
        if current == shipped:
            mark.write_text(_digest(shipped) + "\n")
            return home
        marked = mark.exists() and mark.read_text().strip() == _digest(current)
        if not (marked or _digest(current) in EARLIER_SHIPPED_DIGESTS):
            return home  # the operator's file
    target.write_bytes(shipped)
    mark.write_text(_digest(shipped) + "\n")
    return home


def open_instance(settings: PipelineSettings | None = None) -> DagsterInstance:
    """The persistent instance in ``settings.dagster_home``, prepared as above."""
    resolved = settings or PipelineSettings.from_env()
    return DagsterInstance.from_config(str(prepare_dagster_home(resolved.dagster_home)))


def ui_command(
    settings: PipelineSettings, *, host: str = "127.0.0.1", port: int = 3000
) -> tuple[list[str], dict[str, str]]:
    """argv and environment for ``dagster dev`` (webserver + daemon) over the settings' state and Dagster home.

    Start it in its own process group and stop it with SIGINT to the group: the webserver, daemon and
    code server are children that outlive a killed parent.
    """
    home = prepare_dagster_home(settings.dagster_home)
    env = {**os.environ, "DAGSTER_HOME": str(home), "EHRSYNC_STATE_DIR": str(settings.state_dir)}
    argv = [sys.executable, "-m", "dagster", "dev", "-m", CODE_LOCATION_MODULE, "-h", host, "-p", str(port)]
    return argv, env
