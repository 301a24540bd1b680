"""`make demo` must keep working from a fresh state: run the real command end to end (sandbox, auth service,
Dagster runs, DuckDB) and check what it promises: the incremental sync fetches only what changed on the EHR and
a second one fetches nothing and changes no warehouse row (the demo itself exits non-zero when either fails)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "WAREHOUSE_URL", "DAGSTER_HOME")}
    proc = subprocess.run(
        [sys.executable, "-m", "ehrsync.cli", "demo", "--state", str(state), "--patients", "8", "--connect", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for step in range(1, 10):
        assert f"== {step}." in out, out
    fetched = re.search(r"fetched by type: (\{.*\})", out)
    changed = re.search(r"changed on the EHR: (\{.*\})", out)
    assert fetched and changed and fetched.group(1) == changed.group(1), out
    assert "fetched 0 new resource(s); warehouse rows changed: 0" in out
    assert "tombstoned 2 resource(s)" in out
    assert "Traceback" not in proc.stderr

    env_file = (state / "ehrsync.env").read_text()
    assert "INTEGRATIONS_TOKEN_ENC_KEY=" in env_file and oct((state / "ehrsync.env").stat().st_mode)[-3:] == "600"
    with duckdb.connect(str(state / "warehouse.duckdb"), read_only=True) as con:
        live = con.execute("select count(*) from fhir_resources where deleted_at is null").fetchone()
        tombstones = con.execute("select count(*) from fhir_resources where deleted_at is not null").fetchone()
    assert live is not None and live[0] > 100
    assert tombstones == (2,)
    assert any((state / "dagster_home").glob("**/*.db")), "the runs are recorded for `make ui`"
