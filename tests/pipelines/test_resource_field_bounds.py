"""A resource field set in a run's config (the launchpad) accepts what its environment variable accepts, no more:
``min_free_disk_bytes`` took ``-1`` (read as ``0``, the check off) where ``EHRSYNC_MIN_FREE_DISK_BYTES=-1`` stops the
start; an infinite step budget, request deadline or lock wait, a lock wait past a day, a resource limit past
256 MiB and a DuckDB memory limit DuckDB or the settings refuse were taken the same way, and so was an infinite
timeout or retry wait of the HTTP client and the warehouse (no variable sets these). Each is refused as the
resource is built, naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterResourceFunctionError, Definitions, job, op
from pydantic import ValidationError

from pipelines.resources import EhrHttpResource, LandingZoneResource, WarehouseResource
from warehouse.limits import MAX_RESOURCE_BYTES_CEILING

_INF = float("inf")
_LANDING_REFUSED = [
    ("min_free_disk_bytes", -1),
    ("step_budget_s", _INF),
    ("lock_wait_s", _INF),
    ("lock_wait_s", 86_401.0),
    ("max_resource_bytes", MAX_RESOURCE_BYTES_CEILING + 1),
]
_LANDING_EDGES = [
    ("min_free_disk_bytes", 0),
    ("lock_wait_s", 86_400.0),
    ("max_resource_bytes", MAX_RESOURCE_BYTES_CEILING),
]


def _rooted(tmp_path: Path) -> dict[str, Any]:
    return {"root": str(tmp_path / "landing"), "attachments_root": str(tmp_path / "attachments")}


@pytest.mark.parametrize(("field", "bad"), _LANDING_REFUSED)
def test_a_landing_field_out_of_its_variables_range_is_refused_naming_it(
    tmp_path: Path, field: str, bad: object
) -> None:
    with pytest.raises(ValidationError, match=field):
        LandingZoneResource(**_rooted(tmp_path), **{field: bad})


@pytest.mark.parametrize(("field", "edge"), _LANDING_EDGES)
def test_a_landing_field_at_its_variables_bound_is_kept(tmp_path: Path, field: str, edge: object) -> None:
    assert getattr(LandingZoneResource(**_rooted(tmp_path), **{field: edge}), field) == edge


@pytest.mark.parametrize(
    "field",
    ["request_deadline_s", "connect_timeout_s", "read_timeout_s", "pool_timeout_s", "retry_min_s", "retry_cap_s"],
)
def test_an_infinite_request_bound_or_wait_is_refused_naming_it(field: str) -> None:
    """No variable sets these timeouts and retry waits, but an infinite one is no value either: wait forever."""
    with pytest.raises(ValidationError, match=field):
        EhrHttpResource(**{field: _INF})


def test_an_infinite_warehouse_lock_wait_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="lock_timeout_s"):
        WarehouseResource(target=str(tmp_path / "w.duckdb"), lock_timeout_s=_INF)


@pytest.mark.parametrize("bad", ["8MB", "lots", "134217728", ""])
def test_a_duckdb_memory_limit_the_settings_refuse_is_refused_naming_it(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValidationError, match="duckdb_memory_limit") as caught:
        WarehouseResource(target=str(tmp_path / "w.duckdb"), duckdb_memory_limit=bad)
    assert "at least 16 MiB" in str(caught.value)
    kept = WarehouseResource(target=str(tmp_path / "w.duckdb"), duckdb_memory_limit=" 1GiB ")
    assert kept.duckdb_memory_limit == "1GiB"


def test_a_run_config_of_minus_one_free_bytes_fails_the_run_naming_the_field(tmp_path: Path) -> None:
    """What an operator sees in the launchpad: the run does not start, and the error names the field."""
    seen: list[dict[str, Any]] = []

    @op
    def read_limits(landing: LandingZoneResource) -> None:
        seen.append(landing.limits())

    @job
    def one_op() -> None:
        read_limits()

    defs = Definitions(jobs=[one_op], resources={"landing": LandingZoneResource(**_rooted(tmp_path))})
    config = {"resources": {"landing": {"config": {**_rooted(tmp_path), "min_free_disk_bytes": -1}}}}
    with pytest.raises(DagsterResourceFunctionError, match="landing") as caught:
        defs.get_job_def("one_op").execute_in_process(run_config=config)
    cause = caught.value.__cause__
    assert isinstance(cause, ValidationError)
    assert "min_free_disk_bytes" in str(cause) and "greater than or equal to 0" in str(cause)
    assert seen == []
    config["resources"]["landing"]["config"]["min_free_disk_bytes"] = 0
    defs.get_job_def("one_op").execute_in_process(run_config=config)
    assert seen == [{"min_free_disk_bytes": 0}]
