"""`make demo` must keep working from a fresh state: run the real command end to end (sandbox, auth service,
Dagster runs, DuckDB) and check what it promises: the incremental sync fetches only what changed on the EHR and
a second one fetches nothing and changes no warehouse row (the demo itself exits non-zero when either fails)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

_LOCATIONS = ("DATABASE_URL", "EHRSYNC_DATABASE_URL", "WAREHOUSE_URL", "DAGSTER_HOME")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(600)  # the command's own limit below: about 3 min alone on 2 cores, more on a busy machine
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in _LOCATIONS}
    sandbox_port, auth_port = _free_port(), _free_port()
    env["EHRSYNC_DEMO_AUTH_PORT"] = str(auth_port)  # the port flags also read the environment
    args = ["demo", "--state", str(state), "--patients", "8", "--connect", "2", "--sandbox-port", str(sandbox_port)]
    proc = subprocess.run(
        [sys.executable, "-m", "ehrsync.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert f"FHIR base http://127.0.0.1:{sandbox_port}/fhir" in out, out
    assert f"auth service http://127.0.0.1:{auth_port}" in out, out
    for step in range(1, 11):
        assert f"== {step}." in out, out
    fetched = re.search(r"fetched by type: (\{.*\})", out)
    changed = re.search(r"changed on the EHR: (\{.*\})", out)
    assert fetched and changed and fetched.group(1) == changed.group(1), out
    assert "fetched 0 new resource(s); warehouse rows changed: 0" in out
    assert "tombstoned 2 resource(s)" in out
    assert "Traceback" not in proc.stderr
    # it ends with where the data is, the analyst's tables and an example query answered from the snapshot
    snapshot = state.resolve() / "analyst" / "current" / "analyst.duckdb"
    assert f"warehouse         {state.resolve() / 'warehouse.duckdb'}" in out, out
    assert f"analyst snapshot  {snapshot}" in out, out
    assert re.search(r"observation \(\d+\)", out) and re.search(r"patient \(\d+\)", out), out
    assert "latest creatinine per patient" in out and "FROM observation" in out, out
    answer = out.split("ORDER BY patient_id, connection_id")[-1]
    assert re.search(r"patient_id\s+creatinine\s+unit\s+effective\s+connection_id", answer), out
    assert re.search(r"\n\s+pat\d+\s+\d+\.\d+\s+mg/dL\s", answer), out
    with duckdb.connect(str(snapshot), read_only=True) as snap:
        assert snap.execute("select count(*) from patient").fetchone() != (0,)
    # the UI hint opens this folder: `make ui` would open var/demo, not the --state given
    assert f"`ehrsync ui --state {state.resolve()}`" in out, out[-500:]

    env_file = (state / "ehrsync.env").read_text()
    assert "INTEGRATIONS_TOKEN_ENC_KEY=" in env_file and oct((state / "ehrsync.env").stat().st_mode)[-3:] == "600"
    assert (state / ".ehrsync-demo").is_file(), "the demo marks the folder it created as its own to delete"
    assert "*" in (state / ".gitignore").read_text().splitlines(), "nothing in it is committed from a checkout"
    with socket.socket() as busy:  # `make ui` opens the folder the demo left: past the folder check to the port
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = int(busy.getsockname()[1])
        ui = subprocess.run(
            [sys.executable, "-m", "ehrsync.cli", "ui", "--state", str(state), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    assert ui.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in ui.stderr, ui.stderr
    with duckdb.connect(str(state / "warehouse.duckdb"), read_only=True) as con:
        live = con.execute("select count(*) from fhir_resources where deleted_at is null").fetchone()
        tombstones = con.execute("select count(*) from fhir_resources where deleted_at is not null").fetchone()
    assert live is not None and live[0] > 100
    assert tombstones == (2,)
    assert any((state / "dagster_home").glob("**/*.db")), "the runs are recorded for `make ui`"


@pytest.mark.parametrize("name", ["DATABASE_URL", "EHRSYNC_DATABASE_URL", "WAREHOUSE_URL"])
def test_demo_refuses_an_external_store_with_one_line(tmp_path: Path, name: str) -> None:
    """The demo keeps its stores under --state (it deletes that folder to start clean); an environment naming
    another app database or warehouse is refused in one line instead of silently ignored, before any work."""
    env = {k: v for k, v in os.environ.items() if k not in _LOCATIONS}
    env[name] = "postgresql+psycopg://u@127.0.0.1:1/elsewhere"
    proc = subprocess.run(
        [sys.executable, "-m", "ehrsync.cli", "demo", "--state", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("Error: ") and name in lines[0] and "unset" in lines[0], lines[0]
    assert not (tmp_path / "demo").exists()


def test_demo_settings_use_the_state_dagster_home_when_the_operator_set_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo drops DAGSTER_HOME from what it reads: its runs go to ``<state>/dagster_home`` for `make ui`."""
    from ehrsync.demo import _demo_settings

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "operator_home"))
    state = tmp_path / "demo"
    settings = _demo_settings(state, {"EHRSYNC_STATE_DIR": str(state)})
    assert settings.dagster_home == state.resolve() / "dagster_home"
    assert settings.overlap_seconds == 0


def test_demo_hint_is_a_command_that_works_without_the_duckdb_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The summary's way to ask one's own SQL uses the Python duckdb that `make install` installs (the duckdb CLI
    is not installed); the printed command runs as printed, even for a snapshot path with a space and a `$`."""
    from types import SimpleNamespace

    from ehrsync.demo_analyst import analyst_summary

    snapshot = tmp_path / "st ate$x" / "analyst.duckdb"
    snapshot.parent.mkdir()
    with duckdb.connect(str(snapshot)) as con:
        con.execute(
            "CREATE TABLE observation AS SELECT 'pat0' AS patient_id, 1.4 AS value_quantity, 'mg/dL' AS unit, "
            "'2024-01-02' AS effective, NULL AS effective_end, 'c1' AS connection_id, '2160-0' AS code"
        )
    result = SimpleNamespace(current=snapshot, tables={"observation": {"dagster/row_count": 1}})
    analyst_summary(str(tmp_path / "warehouse.duckdb"), result)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "duckdb -readonly" not in out
    command = out.split("Ask it your own SQL from Python")[1].splitlines()[1].strip()
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "count_star()" in proc.stdout and "│            1 │" in proc.stdout, proc.stdout
