"""The daily ``refresh_idle_grants`` schedule and its ``keep_grants_alive`` job (issue 4; SAL-23..25).

The job runs in-process from the full code location against a real app database and the sandbox EHR, with
the vault built the production way (INTEGRATIONS_TOKEN_ENC_KEY, client auth from the provider config).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, RunRequest, build_schedule_context
from pydantic import ValidationError

from engine.errors import PipelineConfigurationError
from engine.run_tags import TRIGGER_TAG
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions
from pipelines.defs.keepalive.jobs import KEEPALIVE_JOB, refresh_idle_grants_schedule
from sandbox import SandboxServer
from store import TokenCipher
from store.models import TokenRecord
from store.tokenrows import open_field
from tests.engine.helpers import SyncWorld, connect_patient


def app_db_url(tmp_path: Path) -> str:
    """The app database of the ``world`` fixture (under ``<tmp>/state``)."""
    return f"sqlite:///{tmp_path / 'state' / 'app.db'}"


def settings_for(tmp_path: Path, **env: str) -> PipelineSettings:
    return PipelineSettings.from_env(
        {"EHRSYNC_STATE_DIR": str(tmp_path / "state"), "DATABASE_URL": app_db_url(tmp_path), **env}
    )


def op_config(**values: int) -> dict[str, object]:
    return {"ops": {"refresh_idle_grants": {"config": values}}}


def backdate(world: SyncWorld, connection_id: str, days: int) -> None:
    with world.env.db.session() as session, session.begin():
        row = session.get(TokenRecord, connection_id)
        assert row is not None
        lifetime = row.expires_at - row.issued_at
        row.issued_at = datetime.now(UTC) - timedelta(days=days)
        row.expires_at = row.issued_at + lifetime


def tokens_row(world: SyncWorld, connection_id: str) -> TokenRecord:
    with world.env.db.session() as session:
        row = session.get(TokenRecord, connection_id)
        assert row is not None
        session.expunge(row)
        return row


def test_keep_grants_alive_refreshes_the_idle_grant_only(
    world: SyncWorld, sandbox: SandboxServer, http: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EHRSYNC_KEEPALIVE_IDLE_DAYS=5: the grant idle for 6 days is refreshed (rotated, SAL-24), the one idle
    for 3 days is not; the op reports the counts as metadata."""
    idle = connect_patient(world, sandbox, http=http)
    recent = connect_patient(world, sandbox, http=http)
    backdate(world, idle, 6)
    backdate(world, recent, 3)
    cipher = TokenCipher(world.cipher_key)
    before_idle, before_recent = tokens_row(world, idle), tokens_row(world, recent)
    # the settings (read once when the code location loads) reach the op through the policy resource
    settings = settings_for(tmp_path, EHRSYNC_KEEPALIVE_IDLE_DAYS="5")
    job = build_definitions(settings).resolve_job_def(KEEPALIVE_JOB)

    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance)

    assert result.success
    assert result.output_for_node("refresh_idle_grants") == {
        "refreshed": 1,
        "needs_reauth": 0,
        "failed": 0,
        "skipped": 0,
        "client_rejected": 0,
    }
    after = tokens_row(world, idle)
    assert after.version == before_idle.version + 1
    assert after.issued_at > before_idle.issued_at + timedelta(days=5)
    assert open_field(cipher, after, "refresh_token") != open_field(cipher, before_idle, "refresh_token")
    assert tokens_row(world, recent).version == before_recent.version
    outputs = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert len(outputs) == 1
    metadata = outputs[0].step_output_data.metadata
    assert metadata["refreshed"].value == 1 and metadata["idle_days"].value == 5
    assert metadata["failed_connections"].value == []
    assert metadata["client_rejected_connections"].value == []


def test_run_config_overrides_the_idle_window_and_is_validated(
    world: SyncWorld, sandbox: SandboxServer, http: httpx.Client, tmp_path: Path
) -> None:
    cid = connect_patient(world, sandbox, http=http)
    backdate(world, cid, 3)
    job = build_definitions(settings_for(tmp_path)).resolve_job_def(KEEPALIVE_JOB)

    with DagsterInstance.ephemeral() as instance:
        untouched = job.execute_in_process(instance=instance)  # default 7 days: 3 is not idle
        refreshed = job.execute_in_process(instance=instance, run_config=op_config(idle_days=2))
        with pytest.raises(ValidationError, match="limit"):
            job.execute_in_process(instance=instance, run_config=op_config(limit=0))

    assert untouched.output_for_node("refresh_idle_grants")["refreshed"] == 0
    assert refreshed.output_for_node("refresh_idle_grants")["refreshed"] == 1


def test_schedule_asks_for_one_run_a_day(dagster_instance_on_disk: DagsterInstance) -> None:
    tick = datetime(2026, 11, 25, 4, 30, tzinfo=UTC)
    with build_schedule_context(instance=dagster_instance_on_disk, scheduled_execution_time=tick) as context:
        request = refresh_idle_grants_schedule(context)

    assert isinstance(request, RunRequest)
    assert request.run_key == "keepalive:20261125"
    assert request.tags[TRIGGER_TAG] == "keepalive"
    assert refresh_idle_grants_schedule.cron_schedule == "30 4 * * *"


@pytest.mark.parametrize(("raw", "expected"), [(None, 7), ("", 7), ("  ", 7), ("1", 1), ("30", 30), ("89", 89)])
def test_idle_days_setting(raw: str | None, expected: int) -> None:
    env = {} if raw is None else {"EHRSYNC_KEEPALIVE_IDLE_DAYS": raw}
    assert PipelineSettings.from_env(env).keepalive_idle_days == expected


@pytest.mark.parametrize("raw", ["0", "90", "-3", "7.5", "seven", "²"])
def test_bad_idle_days_named_in_the_error(raw: str) -> None:
    with pytest.raises(PipelineConfigurationError, match="EHRSYNC_KEEPALIVE_IDLE_DAYS"):
        PipelineSettings.from_env({"EHRSYNC_KEEPALIVE_IDLE_DAYS": raw})
