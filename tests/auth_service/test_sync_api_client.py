"""The sync API's Dagster GraphQL client (issue 5): its error mapping over ``httpx.MockTransport``, and the API's
reconciliation of open ``sync_runs`` rows with Dagster's run status (app over TestClient); no Dagster runs here
(those are in test_sync_api.py and test_sync_api_bulk.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from auth_service.core.config import load_settings
from auth_service.services.dagster_client import (
    DagsterGraphQLClient,
    JobSelector,
    OrchestratorRejectedError,
    OrchestratorUnavailableError,
)
from connectors.errors import ConfigurationError
from store.models import Connection
from tests.auth_service.keyutil import enc_key
from tests.auth_service.sync_stack import SYNC, WHERE, sync_run


def test_settings_default_and_validation() -> None:
    base = {"INTEGRATIONS_TOKEN_ENC_KEY": enc_key()}
    assert load_settings(**base).DAGSTER_GRAPHQL_URL == "http://127.0.0.1:3000/graphql"
    with pytest.raises(ConfigurationError, match="DAGSTER_GRAPHQL_URL"):
        load_settings(**base, DAGSTER_GRAPHQL_URL="localhost:3000")


# --- unit cases of the GraphQL client over httpx.MockTransport ---------------------------------------------


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> DagsterGraphQLClient:
    return DagsterGraphQLClient(
        "http://dagster.test/graphql", http=httpx.Client(transport=httpx.MockTransport(handler))
    )


def _answer(field: str, result: dict[str, Any]) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(200, json={"data": {field: result}})


@pytest.mark.parametrize(
    ("typename", "result", "expected"),
    [
        ("PythonError", {"message": "boom in user code"}, "PythonError: boom in user code"),
        ("InvalidSubsetError", {"message": "no such asset"}, "InvalidSubsetError: no such asset"),
        ("PipelineNotFoundError", {"message": "job gone"}, "PipelineNotFoundError: job gone"),
        (
            "RunConfigValidationInvalid",
            {"errors": [{"message": "missing ops"}, {"message": "bad type"}]},
            "RunConfigValidationInvalid: missing ops; bad type",
        ),
        ("UnauthorizedError", {"message": "read-only"}, "UnauthorizedError: read-only"),
    ],
)
def test_launch_error_results_map_to_rejected(typename: str, result: dict[str, Any], expected: str) -> None:
    client = _client(_answer("launchRun", {"__typename": typename, **result}))
    with pytest.raises(OrchestratorRejectedError) as info:
        client.launch_run(WHERE, {"dagster/partition": "c1"})
    assert info.value.typename == typename and str(info.value) == expected
    assert info.value.code == "orchestrator_rejected"


def test_launch_sends_selector_and_tags() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(
            200,
            json={
                "data": {"launchRun": {"__typename": "LaunchRunSuccess", "run": {"runId": "r-1", "status": "QUEUED"}}}
            },
        )

    assert _client(handler).launch_run(WHERE, {"dagster/partition": "c1", "ehrsync/trigger": "api"}) == "r-1"
    params = seen[0]["variables"]["executionParams"]
    assert params["selector"] == {
        "repositoryLocationName": "pipelines.definitions",
        "repositoryName": "__repository__",
        "jobName": "incremental_sync",
    }
    assert {"key": "dagster/partition", "value": "c1"} in params["executionMetadata"]["tags"]
    assert "launchRun" in seen[0]["query"]


@pytest.mark.parametrize(
    "handler",
    [
        lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused", request=request)),
        lambda request: (_ for _ in ()).throw(httpx.ReadTimeout("slow", request=request)),
        lambda request: httpx.Response(502, text="bad gateway"),
        lambda request: httpx.Response(200, text="<html>proxy login</html>"),
        lambda request: httpx.Response(200, json=["not", "an", "object"]),
    ],
    ids=["refused", "timeout", "http-502", "not-json", "not-object"],
)
def test_unreachable_or_garbage_is_unavailable(handler: Callable[[httpx.Request], httpx.Response]) -> None:
    with pytest.raises(OrchestratorUnavailableError) as info:
        _client(handler).run_status("r-1")
    assert info.value.code == "orchestrator_unavailable"


def test_partition_config_is_asked_by_pipeline_selector_and_launched_as_run_config() -> None:
    """The launch carries the job's own partition config (``full_resync``: ``full: true``), issue 10."""
    seen: list[dict[str, Any]] = []
    yaml = "ops:\n  landing__Patient:\n    config:\n      full: true\n"

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if "pipelineOrError" in body["query"]:
            partition = {"runConfigOrError": {"__typename": "PartitionRunConfig", "yaml": yaml}}
            return httpx.Response(
                200, json={"data": {"pipelineOrError": {"__typename": "Pipeline", "partition": partition}}}
            )
        run = {"runId": "r-1", "status": "QUEUED"}
        return httpx.Response(200, json={"data": {"launchRun": {"__typename": "LaunchRunSuccess", "run": run}}})

    client = _client(handler)
    config = client.partition_run_config(WHERE, "c1")
    assert config == yaml
    assert seen[0]["variables"] == {
        "selector": {
            "repositoryLocationName": "pipelines.definitions",
            "repositoryName": "__repository__",
            "pipelineName": "incremental_sync",
        },
        "partition": "c1",
    }
    assert client.launch_run(WHERE, {"dagster/partition": "c1"}, config) == "r-1"
    assert seen[1]["variables"]["executionParams"]["runConfigData"] == yaml


@pytest.mark.parametrize(
    "result",
    [
        {"__typename": "PipelineNotFoundError", "message": "no job"},
        {"__typename": "Pipeline", "partition": {"runConfigOrError": {"__typename": "PythonError", "message": "bad"}}},
        {"__typename": "Pipeline", "partition": None},
    ],
    ids=["no-job", "config-error", "no-partition"],
)
def test_partition_config_errors_are_rejected(result: dict[str, Any]) -> None:
    with pytest.raises(OrchestratorRejectedError):
        _client(_answer("pipelineOrError", result)).partition_run_config(WHERE, "c1")


def test_run_state_reads_the_runs_own_times() -> None:
    run = {"__typename": "Run", "runId": "r", "status": "SUCCESS", "startTime": 1_790_000_000.5, "endTime": None}
    state = _client(_answer("runOrError", run)).run_state("r")
    assert state is not None and state.status == "SUCCESS" and state.ended_at is None
    assert state.started_at == datetime.fromtimestamp(1_790_000_000.5, UTC)


def test_graphql_top_level_errors_are_rejected() -> None:
    body = {"errors": [{"message": 'Cannot query field "launchRun" on type "Mutation".'}]}
    client = _client(lambda request: httpx.Response(400, json=body))
    with pytest.raises(OrchestratorRejectedError, match="Cannot query field"):
        client.launch_run(WHERE, {})


def test_duplicate_partition_is_success_and_other_errors_raise() -> None:
    dup = _answer("addDynamicPartition", {"__typename": "DuplicateDynamicPartitionError", "message": "exists"})
    assert _client(dup).add_dynamic_partition(WHERE, "connections", "c1") is False
    ok = _answer("addDynamicPartition", {"__typename": "AddDynamicPartitionSuccess", "partitionKey": "c1"})
    assert _client(ok).add_dynamic_partition(WHERE, "connections", "c1") is True
    err = _answer("addDynamicPartition", {"__typename": "PythonError", "message": "storage down"})
    with pytest.raises(OrchestratorRejectedError, match="storage down"):
        _client(err).add_dynamic_partition(WHERE, "connections", "c1")


def test_run_status_and_not_found() -> None:
    assert _client(_answer("runOrError", {"__typename": "Run", "runId": "r", "status": "FAILURE"})).run_status("r") == (
        "FAILURE"
    )
    missing = _answer("runOrError", {"__typename": "RunNotFoundError", "message": "no run"})
    assert _client(missing).run_status("r") is None


def test_find_job_needs_exactly_one_repository() -> None:
    nodes = [{"name": "__repository__", "location": {"name": "loc"}, "jobs": [{"name": "bulk_export"}]}]
    repos = _answer("repositoriesOrError", {"__typename": "RepositoryConnection", "nodes": nodes})
    assert _client(repos).find_job("bulk_export") == JobSelector("loc", "__repository__", "bulk_export")
    with pytest.raises(OrchestratorRejectedError, match="no repositories define job 'incremental_sync'"):
        _client(repos).find_job("incremental_sync")


def test_client_refuses_a_relative_url() -> None:
    with pytest.raises(ValueError, match="not an absolute"):
        DagsterGraphQLClient("/graphql")


# --- reconciliation of open rows with Dagster's run status (app over TestClient, Dagster over MockTransport) --

_T0 = 1_790_000_000.25  # a Dagster run record's startTime (epoch seconds)
_ENDED = {"startTime": _T0, "endTime": _T0 + 42.5}


@pytest.mark.parametrize(
    ("row_status", "dagster", "reported"),
    [
        ("running", {"__typename": "Run", "runId": "r", "status": "FAILURE", **_ENDED}, "failed"),
        ("running", {"__typename": "Run", "runId": "r", "status": "CANCELED", **_ENDED}, "failed"),
        ("queued", {"__typename": "Run", "runId": "r", "status": "STARTED", "startTime": _T0}, "running"),
        ("queued", {"__typename": "Run", "runId": "r", "status": "QUEUED"}, "queued"),
        ("running", {"__typename": "Run", "runId": "r", "status": "SUCCESS", **_ENDED}, "completed"),
        ("running", {"__typename": "Run", "runId": "r", "status": "SUCCESS", "endTime": None}, "running"),
        ("queued", {"__typename": "RunNotFoundError", "message": "no run"}, "queued"),
        ("completed", {"__typename": "Run", "runId": "r", "status": "FAILURE"}, "completed"),
    ],
)
def test_open_rows_follow_dagster(make_app: Any, row_status: str, dagster: dict[str, Any], reported: str) -> None:
    """A run Dagster failed or canceled while the row still says running is reported failed at once."""
    handle = make_app()
    key = handle.bootstrap("t1")
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content)["query"])
        return httpx.Response(200, json={"data": {"runOrError": dagster}})

    handle.app.state.dagster = _client(handler)
    ctx = handle.app.state.ctx
    with ctx.db.session() as session, session.begin():
        conn = Connection(tenant_id="t1", provider_id="smart", fhir_base="https://ehr.example/fhir", client_id="a")
        session.add(conn)
        session.flush()
        session.add(
            sync_run("r", conn.id, kind="incremental", status=row_status, counts={"Patient": {"fetched": 1}}, size=5)
        )
        conn_id = conn.id
    body = handle.client.get(SYNC, params={"syncId": "r"}, headers={"X-API-Key": key}).json()
    assert body["status"] == reported, body
    assert body["counts"] == {"Patient": {"fetched": 1}} and body["bytes"] == 5
    assert len(calls) == (0 if row_status == "completed" else 1)  # closed rows never ask Dagster
    if reported == "failed":
        assert dagster["status"] in body["error"]
    if row_status != reported and reported in ("completed", "failed"):  # Dagster's record's end (issue 10)
        assert body["finishedAt"] == datetime.fromtimestamp(_T0 + 42.5, UTC).isoformat(), body
        assert body["durationS"] == 42.5
    elif reported not in ("completed", "failed"):
        assert body["finishedAt"] is None
    history = handle.client.get(SYNC, params={"connectionId": conn_id}, headers={"X-API-Key": key}).json()
    assert [h["status"] for h in history] == [reported]
