"""A command reads the ehrsync settings once (docs/DEPLOY.md: "read once per process"; engine/settings.py).

``ehrsync sync`` and ``reconcile`` read them a second time to check the signing key, and ``purge`` to open the app
database, after the pipelines' settings had been read: two readings of one environment, which a command must
never see differ. The commands run in this process, so each reading of ``AppSettings`` is counted.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ehrsync.cli import main
from settings.app import AppSettings

_DROPPED = ("DATABASE_URL", "EHRSYNC_DATABASE_URL", "WAREHOUSE_URL", "DAGSTER_HOME", "EHRSYNC_HOME")


@pytest.mark.parametrize(
    "args",
    [["sync", "c1"], ["reconcile", "c1"], ["purge", "c1", "--yes"], ["connections", "list"]],
    ids=["sync", "reconcile", "purge", "list"],
)
def test_a_command_reads_the_settings_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    for name in _DROPPED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EHRSYNC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", base64.b64encode(os.urandom(32)).decode())
    assert CliRunner().invoke(main, ["db", "migrate"]).exit_code == 0
    reads: list[str] = []
    read = AppSettings.__init__

    def counted(self: AppSettings, *a: Any, **k: Any) -> None:
        reads.append(type(self).__name__)
        read(self, *a, **k)

    monkeypatch.setattr(AppSettings, "__init__", counted)
    result = CliRunner().invoke(main, args)
    # past the settings: the connection is looked up (none here), or the empty list printed
    assert "connection 'c1' not found" in result.output or "no connections yet" in result.output, result.output
    assert reads == ["AppSettings"]
