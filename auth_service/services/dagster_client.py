"""A small typed client of the Dagster webserver's GraphQL API: ensure a partition, launch a run, read its status.

The auth service may not import Dagster (docs/ARCHITECTURE.md), so it talks to the orchestrator the way the
Dagster UI does, over HTTP. Every failure leaves as a typed ``OrchestratorError``: ``OrchestratorUnavailableError``
when the webserver cannot be reached or answers garbage, ``OrchestratorRejectedError`` when it answered with a
GraphQL error result (``PythonError``, ``InvalidSubsetError``, ``RunConfigValidationInvalid``, ...).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.errors import EhrSyncError
from connectors.transport.tls import default_ssl_context

__all__ = [
    "FINISHED_STATUSES",
    "IN_FLIGHT_STATUSES",
    "DagsterGraphQLClient",
    "JobSelector",
    "OrchestratorError",
    "OrchestratorRejectedError",
    "OrchestratorUnavailableError",
    "RunState",
]

logger = logging.getLogger(__name__)

# Dagster's RunStatus values, grouped by what they mean to a caller waiting on a sync.
IN_FLIGHT_STATUSES = frozenset({"QUEUED", "NOT_STARTED", "MANAGED", "STARTING", "STARTED", "SUSPENDED", "CANCELING"})
FINISHED_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


class OrchestratorError(EhrSyncError):
    """Dagster could not do what was asked."""

    code = "orchestrator_error"


class OrchestratorUnavailableError(OrchestratorError):
    """The webserver is down, timed out, or did not answer GraphQL JSON: retry later."""

    code = "orchestrator_unavailable"


class OrchestratorRejectedError(OrchestratorError):
    """Dagster answered with an error result; ``typename`` is its GraphQL type (e.g. ``PythonError``)."""

    code = "orchestrator_rejected"

    def __init__(self, typename: str, message: str) -> None:
        super().__init__(f"{typename}: {message}")
        self.typename = typename


@dataclass(frozen=True)
class JobSelector:
    """Where a job lives in the Dagster workspace (code location, repository, job)."""

    location: str
    repository: str
    job: str

    def as_graphql(self) -> dict[str, str]:
        return {"repositoryLocationName": self.location, "repositoryName": self.repository, "jobName": self.job}

    def repository_selector(self) -> dict[str, str]:
        return {"repositoryLocationName": self.location, "repositoryName": self.repository}


_REPOSITORIES = """
query EhrsyncRepositories {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
    ... on Error { message }
  }
}
"""

_ADD_PARTITION = """
mutation EhrsyncAddPartition($repositorySelector: RepositorySelector!, $partitionsDefName: String!,
                             $partitionKey: String!) {
  addDynamicPartition(repositorySelector: $repositorySelector, partitionsDefName: $partitionsDefName,
                      partitionKey: $partitionKey) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on Error { message }
  }
}
"""

_LAUNCH = """
mutation EhrsyncLaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""

_RUN_STATUS = """
query EhrsyncRunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status startTime endTime }
    ... on Error { message }
  }
}
"""

_PARTITION_CONFIG = """
query EhrsyncPartitionConfig($selector: PipelineSelector!, $partition: String!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline {
      partition(partitionName: $partition) {
        runConfigOrError { __typename ... on PartitionRunConfig { yaml } ... on PythonError { message } }
      }
    }
    ... on Error { message }
  }
}
"""


@dataclass(frozen=True)
class RunState:
    """A run as Dagster's run record has it: ``RunStatus`` and the run's own start and end (UTC), if known."""

    status: str
    started_at: datetime | None = None
    ended_at: datetime | None = None


def _instant(value: object) -> datetime | None:
    """A GraphQL ``Float`` epoch timestamp as an aware datetime; anything else is unknown."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(float(value), UTC)


def _error_message(result: dict[str, Any]) -> str:
    """The message of an error result; config errors list each problem."""
    errors = result.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict))
    return str(result.get("message") or "no message")


class DagsterGraphQLClient:
    """One webserver's ``/graphql`` endpoint; the repository of each job is looked up once and cached."""

    def __init__(self, url: str, *, http: httpx.Client | None = None, timeout_s: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Dagster GraphQL URL {url!r} is not an absolute http(s) URL")
        self.url = url
        self._own_http = http is None
        # The process's shared TLS context: building one loads the CA bundle (~30 ms of CPU), once per app here.
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
        self._http = http or httpx.Client(timeout=timeout, verify=default_ssl_context())
        self._jobs: dict[str, JobSelector] = {}

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def _call(self, query: str, variables: dict[str, Any], field: str) -> dict[str, Any]:
        """POST one operation and return ``data[field]`` (a dict with ``__typename``)."""
        try:
            response = self._http.post(self.url, json={"query": query, "variables": variables})
        except httpx.HTTPError as exc:
            logger.warning("Dagster GraphQL unreachable at %s: %s", self.url, type(exc).__name__)
            raise OrchestratorUnavailableError(
                f"Dagster is not reachable at {self.url} ({type(exc).__name__})"
            ) from None
        if response.status_code >= 500 or response.status_code in (404, 408, 429):
            raise OrchestratorUnavailableError(f"Dagster GraphQL answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise OrchestratorUnavailableError(
                f"Dagster GraphQL answered HTTP {response.status_code} without JSON"
            ) from None
        if not isinstance(body, dict):
            raise OrchestratorUnavailableError("Dagster GraphQL answered a JSON body that is not an object")
        data = body.get("data")
        result = data.get(field) if isinstance(data, dict) else None
        if not isinstance(result, dict):
            errors = body.get("errors")
            message = _error_message({"errors": errors}) if isinstance(errors, list) else "no data"
            raise OrchestratorRejectedError("GraphQLError", message)
        return result

    def find_job(self, job_name: str) -> JobSelector:
        """The code location and repository that define ``job_name`` (exactly one must)."""
        cached = self._jobs.get(job_name)
        if cached is not None:
            return cached
        result = self._call(_REPOSITORIES, {}, "repositoriesOrError")
        if result.get("__typename") != "RepositoryConnection":
            raise OrchestratorRejectedError(str(result.get("__typename")), _error_message(result))
        matches = [
            JobSelector(str(node["location"]["name"]), str(node["name"]), job_name)
            for node in result.get("nodes") or []
            if any(job.get("name") == job_name for job in node.get("jobs") or [])
        ]
        if len(matches) != 1:
            found = "no" if not matches else f"{len(matches)}"
            raise OrchestratorRejectedError("PipelineNotFoundError", f"{found} repositories define job {job_name!r}")
        self._jobs[job_name] = matches[0]
        return matches[0]

    def add_dynamic_partition(self, where: JobSelector, partitions_def: str, key: str) -> bool:
        """Add ``key`` to a dynamic partitions definition; False when it already existed (not an error)."""
        variables = {
            "repositorySelector": where.repository_selector(),
            "partitionsDefName": partitions_def,
            "partitionKey": key,
        }
        result = self._call(_ADD_PARTITION, variables, "addDynamicPartition")
        typename = str(result.get("__typename"))
        if typename == "AddDynamicPartitionSuccess":
            return True
        if typename == "DuplicateDynamicPartitionError":
            return False
        raise OrchestratorRejectedError(typename, _error_message(result))

    def partition_run_config(self, where: JobSelector, partition_key: str) -> str:
        """The job's own run config for one partition, as YAML (what the Dagster UI launches a partition with).

        A partitioned job's configuration (``full_resync`` sets ``full: true`` on every landing op) is applied
        only when the launch carries it: a bare GraphQL launch runs with empty config, i.e. the ops' defaults.
        """
        selector = {**where.repository_selector(), "pipelineName": where.job}  # PipelineSelector's spelling
        variables = {"selector": selector, "partition": partition_key}
        result = self._call(_PARTITION_CONFIG, variables, "pipelineOrError")
        typename = str(result.get("__typename"))
        if typename != "Pipeline":
            raise OrchestratorRejectedError(typename, _error_message(result))
        partition = result.get("partition")
        config = partition.get("runConfigOrError") if isinstance(partition, dict) else None
        if not isinstance(config, dict) or config.get("__typename") != "PartitionRunConfig":
            kind = str(config.get("__typename")) if isinstance(config, dict) else "PartitionRunConfigMissing"
            message = _error_message(config) if isinstance(config, dict) else f"no run config for {partition_key!r}"
            raise OrchestratorRejectedError(kind, message)
        return str(config.get("yaml") or "")

    def launch_run(self, where: JobSelector, tags: dict[str, str], run_config: str | None = None) -> str:
        """Submit a run of the job (queued by the run coordinator) with ``run_config`` (YAML), return its id."""
        params: dict[str, Any] = {
            "selector": where.as_graphql(),
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in sorted(tags.items())]},
        }
        if run_config:
            params["runConfigData"] = run_config
        result = self._call(_LAUNCH, {"executionParams": params}, "launchRun")
        typename = str(result.get("__typename"))
        if typename != "LaunchRunSuccess":
            raise OrchestratorRejectedError(typename, _error_message(result))
        run = result.get("run")
        if not isinstance(run, dict) or not run.get("runId"):
            raise OrchestratorRejectedError(typename, "launch succeeded without a run id")
        return str(run["runId"])

    def run_state(self, run_id: str) -> RunState | None:
        """The run's status and own start/end times from Dagster's run record; None if Dagster has no such run."""
        result = self._call(_RUN_STATUS, {"runId": run_id}, "runOrError")
        typename = str(result.get("__typename"))
        if typename == "Run":
            return RunState(
                str(result.get("status")), _instant(result.get("startTime")), _instant(result.get("endTime"))
            )
        if typename == "RunNotFoundError":
            return None
        raise OrchestratorRejectedError(typename, _error_message(result))

    def run_status(self, run_id: str) -> str | None:
        """Dagster's ``RunStatus`` of the run (``QUEUED``, ``STARTED``, ``SUCCESS``...), None if Dagster has none."""
        state = self.run_state(run_id)
        return state.status if state is not None else None
