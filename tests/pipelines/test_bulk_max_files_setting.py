"""EHRSYNC_BULK_MAX_FILES: read once at start (``EngineLimits``), a malformed value stops the start naming it, and
the parsed value reaches a sync step's ``SyncEnvironment`` (whose Bulk client holds manifests to it) through the
``landing`` resource. A large health system's export needs more than the default 20,000 files, so the operator must
be able to raise it."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from connectors.bulk.manifest import MAX_MANIFEST_FILES
from engine.errors import PipelineConfigurationError
from engine.settings import PipelineSettings
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


def test_unset_it_is_the_default_and_a_whole_number_raises_it() -> None:
    assert PipelineSettings.from_env({}).limits.bulk_max_files == MAX_MANIFEST_FILES == 20_000
    assert PipelineSettings.from_env({"EHRSYNC_BULK_MAX_FILES": " 150000 "}).limits.bulk_max_files == 150_000
    assert PipelineSettings.from_env({"EHRSYNC_BULK_MAX_FILES": "1"}).limits.bulk_max_files == 1


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "2e4", "20k", "lots"])  # empty: unset (test_empty_values)
def test_a_value_that_is_not_a_positive_whole_number_stops_the_start_naming_it(value: str) -> None:
    with pytest.raises(
        PipelineConfigurationError, match=r"EHRSYNC_BULK_MAX_FILES=.* is not a whole number of at least 1"
    ):
        PipelineSettings.from_env({"EHRSYNC_BULK_MAX_FILES": value})


def test_the_setting_reaches_a_sync_steps_environment(
    app_db: AppDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Variables -> settings -> ``default_resources`` -> the step's environment (on to its Bulk client:
    tests/engine/test_bulk_max_files.py)."""
    monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", base64.b64encode(os.urandom(32)).decode())
    env_vars = {"EHRSYNC_STATE_DIR": str(tmp_path), "DATABASE_URL": app_db.url, "EHRSYNC_BULK_MAX_FILES": "100000"}
    resources = default_resources(PipelineSettings.from_env(env_vars))
    app, landing, warehouse = resources["app_db"], resources["landing"], resources["warehouse"]
    http, policy = resources["ehr_http"], resources["policy"]
    assert isinstance(app, AppDatabaseResource) and isinstance(landing, LandingZoneResource)
    assert isinstance(warehouse, WarehouseResource) and isinstance(http, EhrHttpResource)
    assert isinstance(policy, SyncPolicyResource)
    assert landing.bulk_max_files == 100_000  # the resource config the UI shows
    with sync_environment(app, landing, warehouse, http, policy) as env:
        assert env.bulk_max_files == 100_000
    http.close()
