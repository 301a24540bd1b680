"""The ``ehrsync`` command answers bad input and unreachable services with one clear line, never a traceback."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


def _run(
    *args: str, env_extra: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "ehrsync.cli", *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd
    )


def test_connections_list_on_an_unmigrated_database_says_what_to_do(tmp_path: Path) -> None:
    proc = _run("connections", "list", env_extra={"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"})
    assert proc.returncode == 1
    assert "ehrsync db migrate" in proc.stderr and "Traceback" not in proc.stderr


def test_connections_list_after_migrate(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"}
    assert _run("db", "migrate", env_extra=env).returncode == 0
    proc = _run("connections", "list", env_extra=env)
    assert proc.returncode == 0 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("no connections yet"), proc.stderr  # before: nothing at all, as if it had hung


def test_sal15_a_connection_without_a_patient_is_listed_as_never_syncing_and_its_sync_refused(tmp_path: Path) -> None:
    """Before: listed like any other, and ``ehrsync sync`` launched a run that failed its every step."""
    from store import AppDatabase
    from store.models import Connection, Tenant

    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}", "EHRSYNC_STATE_DIR": str(tmp_path / "state")}
    env["INTEGRATIONS_TOKEN_ENC_KEY"] = _GOOD_KEY
    db = AppDatabase.from_url(env["DATABASE_URL"])
    db.migrate()
    with db.session() as session:
        session.add(Tenant(id="t1", name="Clinic", settings={}))
        session.flush()
        session.add(
            Connection(
                id="clin",
                tenant_id="t1",
                provider_id="smart",
                fhir_base="http://x/fhir",
                client_id="c",
                status="active",
            )
        )
        session.commit()
    db.dispose()
    listed = _run("connections", "list", env_extra=env)
    assert listed.returncode == 0 and "sync=never (no_patient: notes only)" in listed.stdout, listed.stdout
    proc = _run("sync", "clin", env_extra=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == (
        "Error: connection_not_syncable: connection clin has no patient (a clinician's sign-in with no patient in "
        "context): it files notes, but a sync needs a patient"
    )


def test_sandbox_mutate_against_nothing_names_the_url() -> None:
    proc = _run("sandbox", "mutate", "--url", "http://127.0.0.1:1", "--update", "1")
    assert proc.returncode == 1
    assert "cannot reach the sandbox at http://127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_patient_count_is_refused_by_the_option_itself() -> None:
    proc = _run("sandbox", "--patients", "0")
    assert proc.returncode == 2 and "--patients" in proc.stderr


# --- issue 10: every command and every configuration error ends with one line, never a traceback -----------

_GOOD_KEY = "t4JTv4brtHtzKipfTJdayl_rg659i4mCNwc8JnvbEhk="  # URL-safe alphabet, as TROUBLESHOOTING's generator makes


def _one_line_failure(proc: subprocess.CompletedProcess[str], names: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and names in lines[0], lines[0]


def _case_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "INTEGRATIONS_TOKEN_ENC_KEY": _GOOD_KEY,
        "EHRSYNC_STATE_DIR": str(tmp_path / "state"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "WAREHOUSE_URL": str(tmp_path / "warehouse.duckdb"),
        **extra,
    }


CONFIG_CASES = [
    ("sync-bad-enc-key", ["sync", "conn-1"], {"INTEGRATIONS_TOKEN_ENC_KEY": "not-a-key"}, "INTEGRATIONS_TOKEN_ENC_KEY"),
    ("sync-short-enc-key", ["sync", "conn-1"], {"INTEGRATIONS_TOKEN_ENC_KEY": "YWJj"}, "INTEGRATIONS_TOKEN_ENC_KEY"),
    ("sync-bad-warehouse-scheme", ["sync", "conn-1"], {"WAREHOUSE_URL": "ftp://host/wh"}, "WAREHOUSE_URL"),
    ("sync-warehouse-is-folder", ["sync", "conn-1"], {"WAREHOUSE_URL": "{tmp}"}, "WAREHOUSE_URL"),
    ("sync-bad-ratio", ["sync", "conn-1"], {"EHRSYNC_QUARANTINE_MAX_RATIO": "lots"}, "EHRSYNC_QUARANTINE_MAX_RATIO"),
    ("sync-bad-windows", ["sync", "conn-1"], {"EHRSYNC_SYNC_WINDOWS": "{"}, "EHRSYNC_SYNC_WINDOWS"),
    ("sync-bad-database-url", ["sync", "conn-1"], {"DATABASE_URL": "nope://x"}, "app database"),
    (
        "sync-missing-jwt-key-file",
        ["sync", "conn-1"],
        {"EHR_JWT_PRIVATE_KEY": "{tmp}/moved-key.pem"},
        "EHR_JWT_PRIVATE_KEY",
    ),
    ("list-bad-database-url", ["connections", "list"], {"DATABASE_URL": "nope://x"}, "app database"),
    (
        "list-unreachable-postgres",
        ["connections", "list"],
        {"DATABASE_URL": "postgresql+psycopg://u@127.0.0.1:1/x"},
        "DATABASE_URL",
    ),
    ("migrate-bad-database-url", ["db", "migrate"], {"DATABASE_URL": "nope://x"}, "app database"),
    ("rotate-bad-enc-key", ["keys", "rotate"], {"INTEGRATIONS_TOKEN_ENC_KEY": "%%%"}, "INTEGRATIONS_TOKEN_ENC_KEY"),
    (
        "bootstrap-bad-enc-key",
        ["auth", "bootstrap", "--tenant", "t1", "--name", "T"],
        {"INTEGRATIONS_TOKEN_ENC_KEY": "%%%"},
        "INTEGRATIONS_TOKEN_ENC_KEY",
    ),
    (
        "serve-missing-jwt-key-file",
        ["auth", "serve", "--port", "0"],
        {"EHR_JWT_PRIVATE_KEY": "/nonexistent/key.pem", "EHR_JWT_KEY_ID": "k1"},
        "EHR_JWT_PRIVATE_KEY",
    ),
    ("demo-state-under-a-file", ["demo", "--state", "{tmp}/a-file/state"], {}, "a-file"),
    (
        "ui-state-under-a-file",
        ["ui", "--state", "{tmp}/a-file/state", "--port", "0"],
        {"EHRSYNC_STATE_DIR": "{tmp}/a-file/state"},  # the same folder: ui refuses a variable naming another
        "a-file",
    ),
    ("sandbox-non-loopback-host", ["sandbox", "--host", "192.0.2.1", "--port", "0"], {}, "loopback"),
]


@pytest.mark.parametrize(("args", "env", "names"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_configuration_error_is_one_line_without_traceback(
    tmp_path: Path, args: list[str], env: dict[str, str], names: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    proc = _run(*[a.replace("{tmp}", str(tmp_path)) for a in args], env_extra=_case_env(tmp_path, **env))
    _one_line_failure(proc, names)


def test_seed_file_error_is_one_line_before_any_database_work(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text("{not json")
    proc = _run("auth", "seed", str(seed), env_extra=_case_env(tmp_path))
    _one_line_failure(proc, "seed.json")
    assert not (tmp_path / "app.db").exists()


def test_url_safe_and_standard_enc_keys_are_both_accepted(tmp_path: Path) -> None:
    """README shows a standard-base64 generator, TROUBLESHOOTING a URL-safe one: both keys must work."""
    for key in (_GOOD_KEY, _GOOD_KEY.replace("_", "/").replace("-", "+")):
        env = _case_env(tmp_path, INTEGRATIONS_TOKEN_ENC_KEY=key)
        assert _run("db", "migrate", env_extra=env).returncode == 0
        proc = _run("keys", "rotate", env_extra=env)
        assert proc.returncode == 0 and "re-encrypted" in proc.stdout, proc.stderr


def test_auth_serve_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _run("auth", "serve", "--port", str(port), env_extra=_case_env(tmp_path))
    _one_line_failure(proc, f"127.0.0.1:{port}")


# --- a setting's error names its variable (README: "a message naming the variable") -------------------------------

NAMED_SETTING_CASES = [
    ("database-url-backend", ["connections", "list"], {"DATABASE_URL": "foo://bar"}, "DATABASE_URL: unsupported"),
    (
        "ehrsync-database-url-backend",
        ["connections", "list"],
        {"DATABASE_URL": "", "EHRSYNC_DATABASE_URL": "foo://bar"},
        "EHRSYNC_DATABASE_URL: unsupported",
    ),
    (
        "migrate-database-url-driver",
        ["db", "migrate"],
        {"DATABASE_URL": "postgresql+psycopg2://u@h/x"},
        "DATABASE_URL:",
    ),
    ("state-dir-is-a-file", ["connections", "list"], {"EHRSYNC_STATE_DIR": "{tmp}/a-file"}, "EHRSYNC_STATE_DIR: "),
    ("state-dir-under-a-file", ["sync", "c1"], {"EHRSYNC_STATE_DIR": "{tmp}/a-file/s"}, "EHRSYNC_STATE_DIR: "),
    (
        "home-is-a-file",
        ["connections", "list"],
        {"EHRSYNC_STATE_DIR": "", "EHRSYNC_HOME": "{tmp}/a-file"},
        "EHRSYNC_HOME: ",
    ),
    # DAGSTER_HOME a file: the sync's Dagster instance answered "Error: File exists: <path>", naming no setting.
    ("dagster-home-is-a-file", ["sync", "c1"], {"DAGSTER_HOME": "{tmp}/a-file"}, "DAGSTER_HOME: "),
    ("dagster-home-under-a-file", ["connections", "list"], {"DAGSTER_HOME": "{tmp}/a-file/h"}, "DAGSTER_HOME: "),
    (
        "serve-database-url",
        ["auth", "serve", "--port", "0"],
        {"DATABASE_URL": "foo://bar"},
        "DATABASE_URL: unsupported",
    ),
    (
        "sync-window-not-a-time",
        ["sync", "c1"],
        {"EHRSYNC_SYNC_WINDOWS": '{"epic": "25:00-06:00"}'},
        "EHRSYNC_SYNC_WINDOWS['epic']: sync window '25:00-06:00': 25:00 is not a time of day",
    ),
]


@pytest.mark.parametrize(
    ("args", "env", "names"), [c[1:] for c in NAMED_SETTING_CASES], ids=[c[0] for c in NAMED_SETTING_CASES]
)
def test_setting_error_names_its_variable(tmp_path: Path, args: list[str], env: dict[str, str], names: str) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    proc = _run(*args, env_extra=_case_env(tmp_path, **env))
    _one_line_failure(proc, names)
    if "STATE_DIR" in names or "HOME" in names:
        assert "a-file" in proc.stderr and (
            "which is a file" in proc.stderr or "is a file, not a folder" in proc.stderr
        )


def test_a_database_never_migrated_says_to_migrate_it_in_every_command(tmp_path: Path) -> None:
    """A fresh state folder's empty app database: ``purge`` answered "no such table: connections" where
    ``connections list`` says to run ``ehrsync db migrate``; every command now says the latter."""
    sqlite3.connect(tmp_path / "empty.db").close()  # a file with no tables
    env = _case_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    for args in (["connections", "list"], ["purge", "c1", "--yes"], ["sync", "c1"], ["reconcile", "c1"]):
        proc = _run(*args, env_extra=env)
        _one_line_failure(proc, "run `ehrsync db migrate` first")


def test_a_command_that_reads_the_app_database_makes_none(tmp_path: Path) -> None:
    """A fresh state folder: ``connections list``, ``purge``, ``sync`` and ``reconcile`` made the folder and an
    empty ``app.db`` by opening it, then said to migrate it. They now say so and make nothing."""
    state = tmp_path / "state"
    env = _case_env(tmp_path, EHRSYNC_STATE_DIR=str(state), DATABASE_URL=f"sqlite:///{state / 'app.db'}")
    for args in (["connections", "list"], ["purge", "c1", "--yes"], ["sync", "c1"], ["reconcile", "c1"]):
        proc = _run(*args, env_extra=env)
        _one_line_failure(proc, f"no app database at {state / 'app.db'}: run `ehrsync db migrate` first")
        assert not state.exists(), args


def test_a_missing_app_database_is_named_by_its_absolute_path(tmp_path: Path) -> None:
    """A relative URL (``sqlite:///state/app.db``) names the file SQLite would open, from the working folder, so the
    operator looks in the right place."""
    env = _case_env(tmp_path, DATABASE_URL="sqlite:///state/app.db")
    proc = _run("connections", "list", env_extra=env, cwd=tmp_path)
    _one_line_failure(proc, f"no app database at {tmp_path.resolve() / 'state' / 'app.db'}: run `ehrsync db migrate`")
    assert not (tmp_path / "state").exists()


def test_unreadable_app_database_is_one_form_in_every_command(tmp_path: Path) -> None:
    """TROUBLESHOOTING's row: every command says ``configuration_error: app database error (...): check
    DATABASE_URL`` for a database it cannot reach (engine reads and the CLI's own alike)."""
    env = _case_env(tmp_path, DATABASE_URL="postgresql+psycopg://u@127.0.0.1:1/x")
    lines = set()
    for args in (["connections", "list"], ["db", "migrate"], ["sync", "c1"], ["reconcile", "c1"]):
        proc = _run(*args, env_extra=env)
        _one_line_failure(proc, "check DATABASE_URL")
        lines.add(proc.stderr.strip())
    assert len(lines) == 1, lines
    assert lines.pop().startswith("Error: configuration_error: app database error (OperationalError: ")
