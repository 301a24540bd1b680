"""The Dagster webserver's GraphQL API over HTTP, as a monitoring script or the auth service would read it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from connectors.transport.tls import default_ssl_context

RUNS = """
query Runs {
  runsOrError(limit: 200) {
    __typename
    ... on Runs { results { runId jobName status tags { key value } } }
    ... on PythonError { message }
  }
}
"""

RUN_EVENTS = """
query RunEvents($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { message } } }
    ... on PythonError { message }
  }
}
"""


@dataclass(frozen=True)
class Run:
    run_id: str
    job_name: str
    status: str
    tags: dict[str, str]


def _post(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = httpx.post(
        url, json={"query": query, "variables": variables or {}}, timeout=10, verify=default_ssl_context()
    )
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    if body.get("errors"):
        raise AssertionError(f"GraphQL errors: {body['errors']}")
    data: dict[str, Any] = body["data"]
    return data


def runs(url: str) -> list[Run]:
    data = _post(url, RUNS)["runsOrError"]
    if data["__typename"] != "Runs":
        raise AssertionError(f"runsOrError: {data}")
    return [
        Run(r["runId"], r["jobName"], r["status"], {t["key"]: t["value"] for t in r["tags"]}) for r in data["results"]
    ]


def run_events(url: str, run_id: str) -> list[tuple[str, str]]:
    """(event type, message) of every event of the run, oldest first."""
    data = _post(url, RUN_EVENTS, {"runId": run_id})["logsForRun"]
    if data["__typename"] != "EventConnection":
        raise AssertionError(f"logsForRun: {data}")
    return [(e["__typename"], e.get("message") or "") for e in data["events"]]
