"""The limits and waits the resources carry: the settings parsed at start, the request bounds of every EHR call
(FHIR and SMART), and the write-back's waits, refused as the resource is built when out of range."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInvalidConfigError, Definitions, job, op
from pydantic import ValidationError

from connectors.errors import ResponseTooLargeError
from connectors.fhir import FhirClient
from connectors.smart import discover
from connectors.transport import BodyBounds, LowSpeedLimit
from engine.errors import PipelineConfigurationError
from engine.settings import PipelineSettings
from pipelines.defs.writeback.resources import WritebackResource
from pipelines.resources import EhrHttpResource, LandingZoneResource, default_resources
from sandbox import SandboxServer


def test_default_resources_carry_the_parsed_settings_so_steps_read_no_environment(tmp_path: Path) -> None:
    """Issue 11: the limits the settings checked at start reach the engine through resource config; a step does
    not read EHRSYNC_* itself (it read them lazily before, so a value changed mid-deployment split a run)."""
    settings = PipelineSettings.from_env(
        {
            "EHRSYNC_STATE_DIR": str(tmp_path),
            "EHRSYNC_MAX_RESOURCE_BYTES": "2048",
            "EHRSYNC_MAX_RESPONSE_BYTES": "4096",
            "EHRSYNC_REQUEST_DEADLINE_S": "7",
            "EHRSYNC_STEP_BUDGET_S": "11",
            "EHRSYNC_BULK_MAX_FILE_BYTES": "1048576",
            "EHRSYNC_MIN_FREE_DISK_BYTES": "0",
            "EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S": "512",
            "EHRSYNC_BULK_LOW_SPEED_WINDOW_S": "30",
            "EHRSYNC_BULK_FILE_DEADLINE_S": "3600",
            "EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS": "3",
            "EHRSYNC_KEEPALIVE_IDLE_DAYS": "5",
            "EHRSYNC_RETRY_BASE_SECONDS": "60",
            "EHRSYNC_BULK_MAX_FILES": "50000",
        }
    )
    resources = default_resources(settings)
    landing, ehr_http = resources["landing"], resources["ehr_http"]
    assert isinstance(landing, LandingZoneResource) and isinstance(ehr_http, EhrHttpResource)
    assert landing.zone().max_resource_bytes == 2048
    assert landing.limits() == {
        "step_budget_s": 11.0,
        "bulk_max_file_bytes": 1048576,
        "bulk_merge_group_bytes": 256 * 1024 * 1024,
        "min_free_disk_bytes": 0,
        "lock_wait_s": 3.0,
        "bulk_low_speed": LowSpeedLimit(512.0, 30.0),
        "bulk_file_deadline_s": 3600.0,
        "bulk_max_files": 50000,
    }
    off = PipelineSettings.from_env(
        {
            "EHRSYNC_STATE_DIR": str(tmp_path),
            "EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S": "0",
            "EHRSYNC_BULK_FILE_DEADLINE_S": "0",
        }
    )
    off_limits = default_resources(off)["landing"].limits()  # type: ignore[attr-defined]
    assert off_limits["bulk_low_speed"] is None and off_limits["bulk_file_deadline_s"] is None
    usual = default_resources(PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path)}))["landing"]
    assert usual.limits()["bulk_file_deadline_s"] == 86400.0  # type: ignore[attr-defined]
    for variable in ("EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S", "EHRSYNC_BULK_FILE_DEADLINE_S"):
        for negative in ("-0.5", "-1"):
            with pytest.raises(PipelineConfigurationError, match=rf"^{variable} must be 0 \(no limit\)"):
                PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path), variable: negative})
    rooted = {"root": str(tmp_path), "attachments_root": str(tmp_path)}
    for field, bad in [
        ("bulk_low_speed_bytes_per_s", -1.0),
        ("bulk_low_speed_window_s", 0.0),
        ("bulk_file_deadline_s", -1.0),
    ] + [
        (field, float(value))
        for field in ("bulk_low_speed_bytes_per_s", "bulk_low_speed_window_s", "bulk_file_deadline_s")
        for value in ("inf", "nan")
    ]:
        with pytest.raises(ValidationError, match=field):  # the UI's run config is refused as the resource is built
            LandingZoneResource(**rooted, **{field: bad})
    assert LandingZoneResource(**rooted, bulk_low_speed_window_s=30).limits() == {
        "bulk_low_speed": LowSpeedLimit(1024.0, 30.0)
    }
    bounds = ehr_http.bounds()
    assert bounds is not None and (bounds.max_bytes, bounds.deadline_s) == (4096, 7.0)
    assert settings.limits.request_bounds() == bounds  # what `ehrsync purge --disconnect` sends with
    assert resources["policy"].keepalive_idle_days == 5  # type: ignore[attr-defined]
    assert resources["retry"].base_seconds == 60  # type: ignore[attr-defined]


def test_the_resources_request_bounds_reach_smart_calls_made_with_its_client(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's ``ehr_http`` limits (set from the settings, or overridden in the launchpad's run config) bound the
    vault's discovery and token calls, which take only the resource's client, as they bound FHIR calls; before,
    those calls read the environment instead."""
    monkeypatch.setenv("EHRSYNC_MAX_RESPONSE_BYTES", str(300 * 1024 * 1024))
    resource = EhrHttpResource(max_response_bytes=1048576, request_deadline_s=30.0)
    try:
        assert FhirClient(sandbox.fhir_base, None, http=resource.client()).bounds == BodyBounds(1048576, 30.0)
        sandbox.admin.set_fault("huge_body", path="/fhir/.well-known/smart-configuration")
        with pytest.raises(ResponseTooLargeError, match="1048576-byte response limit"):
            discover(sandbox.fhir_base, http=resource.client())
    finally:
        resource.close()


def test_the_writeback_waits_are_settings_and_a_wait_that_is_no_positive_number_is_refused() -> None:
    """``accepted_wait_s``, ``lookup_wait_s``, ``binary_posts_max`` (and the polls' count and interval) were fixed in
    the engine: the resource had no field for them. Now they reach the run's config, and a zero, negative or
    infinite wait is refused as the resource is built, naming the field."""
    chosen = {"accepted_wait_s": 30.0, "lookup_wait_s": 45.0, "binary_posts_max": 2, "accepted_polls": 4}
    config = WritebackResource(
        **chosen, service_write_enabled=False, accepted_poll_s=0.5, retry_after_cap_s=3600.0
    ).config()
    assert (config.accepted_wait_s, config.lookup_wait_s, config.binary_posts_max, config.accepted_polls) == (
        30.0,
        45.0,
        2,
        4,
    )
    assert (config.accepted_poll_s, config.retry_after_cap_s) == (0.5, 3600.0)
    for field in ("accepted_wait_s", "lookup_wait_s", "accepted_poll_s", "stalled_after_s", "retry_after_cap_s"):
        for bad in (0.0, -1.0, float("inf"), float("nan")):
            with pytest.raises(ValidationError, match=field):
                WritebackResource(service_write_enabled=False, **{field: bad})
    for field in ("binary_posts_max", "accepted_polls"):
        with pytest.raises(ValidationError, match=field):
            WritebackResource(service_write_enabled=False, **{field: 0})


def test_a_writeback_wait_past_a_year_is_refused_naming_the_field() -> None:
    """A wait of 1e12 s (finite, above 0) was accepted: the next-attempt time it gives is past year 9999, so a 202's
    ``accepted_wait_s`` raised OverflowError before the note left ``sending`` (a resumed run would POST it again,
    which If-None-Exist cannot stop for a note not filed yet), and a retry's backoff crashed the run. Every wait is
    at most a year now, refused naming the field as the resource is built."""
    waits = ("backoff_base_s", "backoff_cap_s", "retry_after_cap_s", "stalled_after_s", "accepted_wait_s")
    for field in (*waits, "accepted_poll_s", "lookup_wait_s"):
        with pytest.raises(ValidationError, match=field):
            WritebackResource(service_write_enabled=False, **{field: 1e12})
        assert (
            getattr(WritebackResource(service_write_enabled=False, **{field: 366 * 86_400.0}).config(), field)
            == 366 * 86_400.0
        )


def test_a_run_config_for_the_writeback_resource_must_state_the_switch() -> None:
    """A run's config for the ``writeback`` resource (docs/WRITEBACK.md, "Settings": Launchpad) replaces the
    configuration it was built with as a whole: one setting only (``lookup_wait_s``) and ``service_write_enabled``
    fell back to false, silently, so the run ``blocked`` its note as ``vendor_disabled`` while SMART_ENABLE_WRITE was
    on. The switch must be stated there now: leaving it out is a config error naming it."""
    seen: list[bool] = []

    @op
    def read_switch(writeback: WritebackResource) -> None:
        seen.append(writeback.config().service_write_enabled)

    @job
    def one_op() -> None:
        read_switch()

    on = Definitions(jobs=[one_op], resources={"writeback": WritebackResource(service_write_enabled=True)})
    on.get_job_def("one_op").execute_in_process()
    assert seen == [True]
    with pytest.raises(DagsterInvalidConfigError, match="service_write_enabled"):
        on.get_job_def("one_op").execute_in_process(
            run_config={"resources": {"writeback": {"config": {"lookup_wait_s": 600.0}}}}
        )
    assert seen == [True]
    chosen = {"service_write_enabled": True, "lookup_wait_s": 600.0}
    on.get_job_def("one_op").execute_in_process(run_config={"resources": {"writeback": {"config": chosen}}})
    assert seen == [True, True]
