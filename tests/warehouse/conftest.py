"""Fixtures for warehouse tests: a landing zone and a warehouse on each backend (DuckDB file, real PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from warehouse import LandedFile, LandingZone, Warehouse, open_warehouse


def resource(
    rid: str,
    last_updated: str | None = "2026-01-01T00:00:00Z",
    version: str | None = "1",
    resource_type: str = "Observation",
    **fields: Any,
) -> dict[str, Any]:
    """A minimal FHIR resource; ``meta`` carries only what is given."""
    res: dict[str, Any] = {"resourceType": resource_type, "id": rid}
    meta: dict[str, str] = {}
    if version is not None:
        meta["versionId"] = version
    if last_updated is not None:
        meta["lastUpdated"] = last_updated
    if meta:
        res["meta"] = meta
    res.update(fields)
    return res


def land(
    zone: LandingZone,
    resources: Iterable[dict[str, Any]],
    *,
    run_id: str = "r1",
    resource_type: str = "Observation",
    connection_id: str = "c1",
    source: str = "https://ehr.example/bulk/file1.ndjson",
    transaction_time: datetime | None = None,
) -> LandedFile:
    """Land ``resources`` as one file; ``transaction_time``: when the server answered them (a Bulk export's
    ``transactionTime``, a REST search's first-page time)."""
    with zone.writer(connection_id, resource_type, run_id, source, transaction_time=transaction_time) as w:
        for r in resources:
            w.add_line(orjson.dumps(r))
    return w.result


@pytest.fixture
def zone(tmp_path: Path) -> LandingZone:
    return LandingZone(tmp_path / "landing")


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def wh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """The same behavioural test runs against DuckDB and PostgreSQL."""
    target = str(tmp_path / "wh.duckdb") if request.param == "duckdb" else request.getfixturevalue("postgres_url")
    with open_warehouse(target) as warehouse:
        yield warehouse


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The databases ``duckdb.connect`` opens meanwhile."""
    seen: list[str] = []
    real = duckdb.connect

    def counting(database: str = ":memory:", *args: object, **kwargs: object) -> duckdb.DuckDBPyConnection:
        seen.append(str(database))
        return real(database, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(duckdb, "connect", counting)
    yield seen
