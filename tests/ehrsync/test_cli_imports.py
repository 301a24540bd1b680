"""Each ``ehrsync`` command loads only what it uses (issue 14): ``connections list`` used to load pyarrow, DuckDB,
httpx and the whole engine (eager package ``__init__``s), and ``sync`` of a mistyped id loaded Dagster and the
pipelines before naming it: a second of CPU and 50-100 MB per command, in every test that starts one.

Checked by what a fresh interpreter has in ``sys.modules``, not by timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_KEY = "t4JTv4brtHtzKipfTJdayl_rg659i4mCNwc8JnvbEhk="
_HEAVY = ("pyarrow", "duckdb", "dagster", "pipelines", "fastapi", "httpx")


def _loaded_after(code: str, tmp_path: Path) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; which of ``_HEAVY`` it loaded, and what it printed to stderr."""
    script = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {_HEAVY!r} if m in sys.modules]))"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "EHRSYNC_DATABASE_URL", "WAREHOUSE_URL")}
    env.update(EHRSYNC_STATE_DIR=str(tmp_path / "state"), INTEGRATIONS_TOKEN_ENC_KEY=_KEY)
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'app.db'}"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return {"loaded": json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


@pytest.mark.parametrize(
    "module",
    [
        "engine.connection_snapshots",
        "engine.errors",
        "store.database",  # ``ehrsync db migrate``: no vault, no token refresh over httpx
        "store.models",
        "warehouse.errors",
        "sandbox.cli",  # ``ehrsync sandbox mutate``: an HTTP client, not the sandbox's FastAPI app
    ],
)
def test_importing_one_module_does_not_load_the_whole_engine(tmp_path: Path, module: str) -> None:
    """The package ``__init__``s export their names on first use (PEP 562), so reading one module of a package
    no longer imports every other (``engine`` imported the bulk exporter, the warehouse and the plugins)."""
    loaded = _loaded_after(f"import {module}", tmp_path)["loaded"]
    # the sandbox's admin client is an httpx client; connections carry their vendor's export slot (the provider
    # plugins), whose URL rule loads httpx only when it checks a URL (``connections list`` checks none)
    assert loaded == (["httpx"] if module == "sandbox.cli" else [])


def test_the_public_names_still_import_from_the_packages(tmp_path: Path) -> None:
    """``from engine import runs, run_bulk_export, ...`` works as before, each name from its own module."""
    code = (
        "import engine, store, warehouse, connectors.fhir, connectors.smart, connectors.transport, connectors.bulk\n"
        "for package in (engine, store, warehouse, connectors.fhir, connectors.smart, connectors.transport,"
        " connectors.bulk):\n"
        "    for name in package.__all__:\n"
        "        assert getattr(package, name) is not None, (package, name)\n"
        "from engine import runs, run_bulk_export, SyncRunRecord\n"
        "assert runs.SyncRunRecord is SyncRunRecord and run_bulk_export.__module__ == 'engine.bulk_export'\n"
        "try:\n"
        "    engine.no_such_name\n"
        "except AttributeError as exc:\n"
        "    assert 'no_such_name' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('engine.no_such_name resolved')"
    )
    assert "pyarrow" in _loaded_after(code, tmp_path)["loaded"]


@pytest.mark.parametrize("command", ["sync", "reconcile"])
def test_an_unknown_connection_is_named_before_dagster_loads(tmp_path: Path, command: str) -> None:
    """``ehrsync sync conn-1`` used to import Dagster and every pipeline definition before finding no conn-1."""
    code = (
        "from store import AppDatabase\n"
        "import os\n"
        "AppDatabase.from_url(os.environ['DATABASE_URL']).migrate()\n"
        "import sys\n"
        "from ehrsync.cli import main\n"
        "try:\n"
        f"    main([{command!r}, 'conn-1'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 1, exc.code"
    )
    ran = _loaded_after(code, tmp_path)
    assert "Error: connection_not_found: connection 'conn-1' not found" in str(ran["stderr"])
    assert not {"dagster", "pipelines", "duckdb", "fastapi", "pyarrow"} & set(ran["loaded"]), ran["loaded"]


def test_reading_the_settings_loads_no_warehouse_and_no_http_client(tmp_path: Path) -> None:
    """``PipelineSettings.from_env`` runs first in ``ehrsync sync``, ``reconcile``, ``purge``, ``ui`` and every Dagster
    process: it imported the run environment (the warehouse with pyarrow, httpx, the provider plugins, the app
    database's models) for a few default numbers, 0.7 s of CPU per process (docs/PERFORMANCE.md, start-up imports)."""
    code = (
        "from engine.settings import PipelineSettings\n"
        "settings = PipelineSettings.from_env()\n"
        "assert settings.limits.bulk_low_speed is not None and settings.landing_retention_days == 7"
    )
    loaded = _loaded_after(code, tmp_path)["loaded"]
    assert loaded == [], loaded
    code = "import sys, engine.settings\nassert 'engine.models' not in sys.modules and 'store' not in sys.modules"
    _loaded_after(code, tmp_path)


def test_a_demo_state_it_may_not_delete_is_named_before_the_demo_loads(tmp_path: Path) -> None:
    """``ehrsync demo --state <someone's folder>``: refused (``check_state_dir``) before the sandbox app and
    Dagster are imported."""
    precious = tmp_path / "clinic-data"
    precious.mkdir()
    (precious / "export.csv").write_text("kept")
    code = (
        "from ehrsync.cli import main\n"
        "try:\n"
        f"    main(['demo', '--state', {str(precious)!r}, '--patients', '2', '--connect', '1'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 1, exc.code"
    )
    ran = _loaded_after(code, tmp_path)
    assert "is not empty and was not created by `ehrsync demo`" in str(ran["stderr"])
    assert ran["loaded"] == ["httpx"] and (precious / "export.csv").read_text() == "kept"


@pytest.mark.parametrize(
    ("args", "env", "named", "late"),
    [
        (["ui", "--state", "{given}", "--port", "0"], {"EHRSYNC_STATE_DIR": None}, "holds other files", "dagster"),
        (["auth", "serve", "--port", "0"], {"EHR_JWT_PRIVATE_KEY": "{key}"}, "is not a readable PEM", "fastapi"),
    ],
    ids=["ui-folder", "serve-key-file"],
)
def test_a_refused_ui_or_auth_serve_loads_neither_dagster_nor_the_app(
    tmp_path: Path, args: list[str], env: dict[str, str | None], named: str, late: str
) -> None:
    """``ehrsync ui`` of someone's folder imported Dagster, and ``ehrsync auth serve`` with an unreadable key file
    the whole FastAPI app, before refusing: ~1 s of CPU for a mistake that needs neither."""
    given, key = tmp_path / "given", tmp_path / "key-file"
    given.mkdir()
    (given / "letter.txt").write_text("mine")
    key.write_bytes(b"\xff\xfe not PEM")
    argv = [arg.format(given=given) for arg in args]
    setenv = "".join(  # None: unset (ui takes its folder from --state and refuses a variable naming another)
        f"os.environ.pop({k!r})\n" if v is None else f"os.environ[{k!r}] = {v.format(key=key)!r}\n"
        for k, v in env.items()
    )
    code = (
        f"import os, sys\n{setenv}"
        "from ehrsync.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 1, exc.code\n"
    )
    ran = _loaded_after(code, tmp_path)
    assert named in str(ran["stderr"]) and late not in ran["loaded"], ran


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["auth", "seed", "{seed}"], "entry 0: id: Field required"),
        (["auth", "bootstrap", "--tenant", "bad id!", "--name", "x"], "id: String should match pattern"),
        (["auth", "brands", "--tenant", "t1", "--source", "regional", "{seed}"], "brands bundle rejected"),
        (["auth", "brands", "--tenant", "t1", "--source", "Bad Name", "{seed}"], "directory name 'Bad Name'"),
    ],
)
def test_bad_auth_set_up_input_is_refused_before_the_service_loads(tmp_path: Path, args: list[str], named: str) -> None:
    """``ehrsync auth seed`` or ``auth brands`` of a malformed file (or directory name) and ``bootstrap`` of a
    malformed id imported the service's settings, database layer (SQLAlchemy), vault and provider plugins before
    checking: 0.6 s of CPU for a typo."""
    seed = tmp_path / "seed.json"
    seed.write_text('[{"bad": 1}]')
    argv = [arg.format(seed=seed) for arg in args]
    code = (
        "import sys\n"
        "from ehrsync.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 1, exc.code\n"
        "late = ('sqlalchemy', 'alembic', 'store', 'cryptography', 'auth_service.core.config')\n"
        "assert not [m for m in late if m in sys.modules], [m for m in late if m in sys.modules]"
    )
    assert named in str(_loaded_after(code, tmp_path)["stderr"])


def test_connections_list_loads_no_http_client_and_no_signing(tmp_path: Path) -> None:
    """``ehrsync connections list`` names each connection's export slot (a vendor plugin's rule) and checks no URL:
    the plugins' URL module imported httpx (0.1 s of CPU) at load for a check it makes only on a URL, and the plugin
    registry and configuration models imported PyJWT and cryptography (~35 ms) for checks of a client's key."""
    code = (
        "import os\n"
        "from store import AppDatabase\n"
        "from store.models import Connection, Tenant\n"
        "db = AppDatabase.from_url(os.environ['DATABASE_URL'])\n"
        "db.migrate()\n"
        "with db.session() as session:\n"
        "    session.add(Tenant(id='t1', name='Clinic', settings={}))\n"
        "    session.flush()\n"
        "    for cid, provider, kind in (('c1', 'cerner', 'backend'), ('c2', 'smart', 'patient')):\n"
        "        session.add(Connection(id=cid, tenant_id='t1', provider_id=provider, fhir_base='http://x/fhir',\n"
        "                               client_id='c', status='active', kind=kind))\n"
        "    session.commit()\n"
        "db.dispose()\n"
        "from ehrsync.cli import main\n"
        "try:\n"
        "    main(['connections', 'list'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "import sys\n"
        "signing = [m for m in ('jwt', 'cryptography') if m in sys.modules]\n"
        "assert not signing, signing"
    )
    ran = _loaded_after(code, tmp_path)
    assert ran["loaded"] == [], ran


def test_loading_the_code_location_leaves_the_fhir_models_and_psycopg_to_the_steps_that_use_them(
    tmp_path: Path,
) -> None:
    """Every Dagster process (the code server, the daemon, each run's worker) loads the code location. It imported
    fhir.resources' R4B models (~0.35 s of CPU) that only a note's or a Provenance's build validates against, and
    psycopg (~0.2 s) that only a PostgreSQL warehouse's view refresh uses, on every deployment."""
    code = (
        "import sys\n"
        "from pipelines.definitions import build_definitions\n"
        "assert build_definitions().resolve_job_def('incremental_sync') is not None\n"
        "late = [m for m in ('fhir.resources', 'psycopg') if m in sys.modules]\n"
        "assert not late, late\n"
        "from connectors.writeback.note import NoteDraft, build_document_reference\n"
        "note = build_document_reference(NoteDraft(tenant_id='t1', draft_id='d1', patient_id='p1', text='x'))\n"
        "assert note['resourceType'] == 'DocumentReference' and 'fhir.resources' in sys.modules"
    )
    assert "dagster" in _loaded_after(code, tmp_path)["loaded"]
