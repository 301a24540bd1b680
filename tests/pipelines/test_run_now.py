"""run_sync_now refuses what cannot sync, picks the job per connection kind, and uses a persistent home."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance

from ehrsync.dagster_instance import open_instance
from ehrsync.run_now import _run_config, _RunSelection, job_for, run_sync_now
from engine import ConnectionNotFoundError, ConnectionNotSyncableError
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions
from tests.pipelines.appdb import AppDb


@pytest.mark.parametrize(
    ("is_bulk", "full", "job"),
    [
        (False, False, "incremental_sync"),
        (False, True, "full_resync"),
        (True, False, "bulk_export"),
        (True, True, "bulk_export"),
    ],
)
def test_job_for(is_bulk: bool, full: bool, job: str) -> None:
    assert job_for(is_bulk=is_bulk, full=full) == job


def _settings(app_db: AppDb, tmp_path: Path) -> PipelineSettings:
    return PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state"), "DATABASE_URL": app_db.url})


def test_unknown_connection_is_named(app_db: AppDb, tmp_path: Path) -> None:
    with pytest.raises(ConnectionNotFoundError, match="nope"):
        run_sync_now("nope", settings=_settings(app_db, tmp_path))


@pytest.mark.parametrize("status", ["needs_reauth", "disabled", "disconnected"])
def test_inactive_connection_is_refused(app_db: AppDb, tmp_path: Path, status: str) -> None:
    cid = app_db.add("c1", status=status)
    with pytest.raises(ConnectionNotSyncableError, match=f"c1 is {status}"):
        run_sync_now(cid, settings=_settings(app_db, tmp_path))


def test_instance_lives_under_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path)})
    with open_instance(settings) as instance:
        assert instance.root_directory == str(tmp_path.resolve() / "dagster_home")
        assert not instance.is_ephemeral
    assert (tmp_path / "dagster_home" / "dagster.yaml").exists()


def test_a_run_limited_to_some_types_selects_their_assets_and_the_references(
    tmp_path: Path, dagster_instance_on_disk: DagsterInstance
) -> None:
    """``resource_types`` keeps each chosen type's two assets and the referenced resources' step, and the full
    resync's run config only for the chosen landing steps (Dagster refuses config for steps not selected).
    Resolving a job reads the current instance's definitions state: a live one, as inside ``run_sync_now``."""
    selection = _RunSelection(resource_types=["Observation"])
    keys = {k.to_user_string() for k in selection.asset_keys() or []}
    assert {"landing/Observation", "warehouse/Observation", "landing/Practitioner", "warehouse/Medication"} <= keys
    assert not any(k.endswith("/Condition") for k in keys)
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path)})
    job = build_definitions(settings).resolve_job_def("full_resync")
    config = _run_config(job, "c1", selection)
    assert config is not None and config["ops"] == {"landing__Observation": {"config": {"full": True}}}
    assert _RunSelection().asset_keys() is None and _run_config(job, "c1", _RunSelection()) is None
