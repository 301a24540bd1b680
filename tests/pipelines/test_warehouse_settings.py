"""The warehouse's operator settings (EHRSYNC_DUCKDB_MEMORY_LIMIT, EHRSYNC_DUCKDB_THREADS,
EHRSYNC_BULK_MERGE_GROUP_BYTES): parsed once at start, a malformed value stops the start naming the variable, and
the parsed values reach a sync step's DuckDB connection and ``SyncEnvironment`` through the resources."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from engine import cores
from engine.cores import usable_cores
from engine.errors import PipelineConfigurationError
from engine.settings import EngineLimits, PipelineSettings
from pipelines.defs._shared.environment import sync_environment
from pipelines.resources import (
    AppDatabaseResource,
    EhrHttpResource,
    LandingZoneResource,
    SyncPolicyResource,
    WarehouseResource,
    default_resources,
)
from tests.pipelines.appdb import AppDb
from warehouse import Warehouse
from warehouse._duckdb_io import DuckCursor

MIB = 1024 * 1024


def _limits(**env: str) -> EngineLimits:
    return PipelineSettings.from_env(env).limits


def test_defaults_are_the_warehouse_and_engine_defaults() -> None:
    limits = _limits()
    assert (limits.duckdb_memory_limit, limits.duckdb_threads, limits.bulk_merge_group_bytes) == (
        "128MB",
        None,
        256 * MIB,
    )


@pytest.mark.parametrize(
    ("name", "value", "field", "parsed"),
    [
        ("EHRSYNC_DUCKDB_MEMORY_LIMIT", "1GiB", "duckdb_memory_limit", "1GiB"),
        ("EHRSYNC_DUCKDB_MEMORY_LIMIT", " 512 MB ", "duckdb_memory_limit", "512 MB"),
        ("EHRSYNC_DUCKDB_MEMORY_LIMIT", "0.5GB", "duckdb_memory_limit", "0.5GB"),
        ("EHRSYNC_DUCKDB_MEMORY_LIMIT", "16MiB", "duckdb_memory_limit", "16MiB"),
        ("EHRSYNC_DUCKDB_MEMORY_LIMIT", "2g", "duckdb_memory_limit", "2g"),
        ("EHRSYNC_DUCKDB_THREADS", "1", "duckdb_threads", 1),
        ("EHRSYNC_DUCKDB_THREADS", " 4 ", "duckdb_threads", 4),
        ("EHRSYNC_DUCKDB_THREADS", "256", "duckdb_threads", 256),
        ("EHRSYNC_BULK_MERGE_GROUP_BYTES", "1", "bulk_merge_group_bytes", 1),
        ("EHRSYNC_BULK_MERGE_GROUP_BYTES", "1073741824", "bulk_merge_group_bytes", 1024 * MIB),
    ],
)
def test_good_values_are_parsed(name: str, value: str, field: str, parsed: object) -> None:
    assert getattr(_limits(**{name: value}), field) == parsed


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EHRSYNC_DUCKDB_MEMORY_LIMIT", "lots"),
        ("EHRSYNC_DUCKDB_MEMORY_LIMIT", "134217728"),  # DuckDB wants a unit
        ("EHRSYNC_DUCKDB_MEMORY_LIMIT", "128Mi"),  # memory_mib reads it, DuckDB does not
        ("EHRSYNC_DUCKDB_MEMORY_LIMIT", "8MB"),  # below 16 MiB
        ("EHRSYNC_DUCKDB_MEMORY_LIMIT", "-1GB"),
        ("EHRSYNC_DUCKDB_MEMORY_LIMIT", "128MB'; DROP TABLE fhir_resources; --"),
        ("EHRSYNC_DUCKDB_THREADS", "0"),
        ("EHRSYNC_DUCKDB_THREADS", "257"),
        ("EHRSYNC_DUCKDB_THREADS", "two"),
        ("EHRSYNC_DUCKDB_THREADS", "1.5"),
        ("EHRSYNC_DUCKDB_THREADS", "-1"),
        ("EHRSYNC_BULK_MERGE_GROUP_BYTES", "0"),
        ("EHRSYNC_BULK_MERGE_GROUP_BYTES", "-5"),
        ("EHRSYNC_BULK_MERGE_GROUP_BYTES", "1.5"),
        ("EHRSYNC_BULK_MERGE_GROUP_BYTES", "1e6"),
        ("EHRSYNC_BULK_MERGE_GROUP_BYTES", "256MiB"),
    ],
)
def test_a_malformed_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(PipelineConfigurationError, match=name):
        _limits(**{name: value})


def _duckdb_settings(wh: Warehouse) -> tuple[str, int]:
    """What DuckDB itself reports on the writer's connection (the one the merge uses)."""
    with wh.batch(), wh._write("probe") as cur:  # the connection the merge runs on
        assert isinstance(cur, DuckCursor)
        row = cur.conn.execute("SELECT current_setting('memory_limit'), current_setting('threads')").fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


def _step_resources(
    settings: PipelineSettings,
) -> tuple[AppDatabaseResource, LandingZoneResource, WarehouseResource, EhrHttpResource, SyncPolicyResource]:
    """The resources a sync step's environment is built from, as ``default_resources`` configures them."""
    resources = default_resources(settings)
    app, landing, warehouse = resources["app_db"], resources["landing"], resources["warehouse"]
    http, policy = resources["ehr_http"], resources["policy"]
    assert isinstance(app, AppDatabaseResource) and isinstance(landing, LandingZoneResource)
    assert isinstance(warehouse, WarehouseResource) and isinstance(http, EhrHttpResource)
    assert isinstance(policy, SyncPolicyResource)
    return app, landing, warehouse, http, policy


def test_the_settings_reach_a_sync_steps_duckdb_connection_and_environment(
    app_db: AppDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Configured as an operator would: variables -> settings -> ``default_resources`` -> the step's environment."""
    monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", base64.b64encode(os.urandom(32)).decode())
    settings = PipelineSettings.from_env(
        {
            "EHRSYNC_STATE_DIR": str(tmp_path),
            "DATABASE_URL": app_db.url,
            "EHRSYNC_DUCKDB_MEMORY_LIMIT": "96MiB",
            "EHRSYNC_DUCKDB_THREADS": "1",
            "EHRSYNC_BULK_MERGE_GROUP_BYTES": "1048576",
        }
    )
    app, landing, warehouse, http, policy = _step_resources(settings)
    assert (warehouse.duckdb_memory_limit, warehouse.duckdb_threads) == ("96MiB", 1)  # the UI's resource config
    with sync_environment(app, landing, warehouse, http, policy) as env:
        assert env.bulk_merge_group_bytes == MIB
        with env.warehouse() as wh:
            assert _duckdb_settings(wh) == ("96.0 MiB", 1)
    with warehouse.open() as wh:  # the other steps' path (analyst views, checks)
        assert _duckdb_settings(wh) == ("96.0 MiB", 1)
    http.close()


def test_unset_the_step_keeps_the_warehouse_defaults(app_db: AppDb, tmp_path: Path) -> None:
    """Without the variables a step's DuckDB gets 128MB and the cores the process may run on (its affinity)."""
    resources = default_resources(PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path)}))
    warehouse = resources["warehouse"]
    assert isinstance(warehouse, WarehouseResource)
    with warehouse.open() as wh:
        assert _duckdb_settings(wh) == ("122.0 MiB", usable_cores())  # DuckDB shows 128 MB in MiB


def test_unset_a_sync_steps_duckdb_leaves_the_bulk_landing_threads_their_cores(
    app_db: AppDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without EHRSYNC_DUCKDB_THREADS a sync step's DuckDB takes the cores the landing threads leave (at least one):
    on 2 cores a second DuckDB thread beside two landing threads only cost CPU (docs/PERFORMANCE.md)."""
    monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", base64.b64encode(os.urandom(32)).decode())
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path), "DATABASE_URL": app_db.url})
    app, landing, warehouse, http, policy = _step_resources(settings)
    with sync_environment(app, landing, warehouse, http, policy) as env:
        assert env.bulk_landing_concurrency == cores.landing_slots()
        expected = max(1, usable_cores() - env.bulk_landing_concurrency)
        assert env.default_duckdb_threads() == expected
        with env.warehouse() as wh:
            assert _duckdb_settings(wh) == ("122.0 MiB", expected)
        monkeypatch.setattr(cores, "usable_cores", lambda: 8)
        assert env.default_duckdb_threads() == 8 - env.bulk_landing_concurrency
        monkeypatch.setattr(cores, "usable_cores", lambda: 1)
        assert env.default_duckdb_threads() == 1
    http.close()


def test_usable_cores_follow_the_process_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container's cpuset, not the host's core count (``os.cpu_count`` ignores affinity)."""
    if hasattr(os, "sched_getaffinity"):
        assert usable_cores() == len(os.sched_getaffinity(0))
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
        assert usable_cores() == 1
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cores() == 6


@pytest.mark.parametrize(("cores_", "slots"), [(1, 1), (2, 1), (3, 2), (8, 2)])
def test_bulk_landing_slots_leave_the_merge_a_core_and_stop_at_two(
    cores_: int, slots: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One landing thread on 2 cores (two contended for the GIL and the merge's core: docs/PERFORMANCE.md,
    seventh session); more cores keep two, the earlier default, as nothing larger was measured."""
    monkeypatch.setattr(cores, "usable_cores", lambda: cores_)
    assert cores.landing_slots() == slots
