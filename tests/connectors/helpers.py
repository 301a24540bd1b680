"""Shared test helpers: a retry policy that records instead of sleeping, and a scripted MockTransport."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from connectors.fhir import FhirClient
from connectors.http import RetryPolicy
from connectors.tokens import StaticTokenSource

BASE = "https://ehr.example.org/fhir/r4"
TOKEN = "tok-AAA"
FIXED_NOW = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)


def recording_policy(sleeps: list[float], **overrides: object) -> RetryPolicy:
    """A policy whose sleeps are recorded (tests never really wait) with a deterministic jitter."""
    kwargs: dict[str, object] = {
        "sleep": sleeps.append,
        "rng": random.Random(7),
        "wall_clock": lambda: FIXED_NOW,
    }
    kwargs.update(overrides)
    return RetryPolicy(**kwargs)  # type: ignore[arg-type]


class Script:
    """A MockTransport handler answering from a list of responses/callables and recording requests."""

    def __init__(self, *steps: httpx.Response | Callable[[httpx.Request], httpx.Response] | Exception) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.steps:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        if callable(step) and not isinstance(step, httpx.Response):
            return step(request)
        return step

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def bundle(
    entries: list[dict[str, Any]], next_url: str | None = None, last_updated: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    if next_url is not None:
        body["link"] = [{"relation": "self", "url": "ignored"}, {"relation": "next", "url": next_url}]
    if last_updated is not None:
        body["meta"] = {"lastUpdated": last_updated}
    return body


def oo(code: str = "processing") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code}]}


def outcome(*issues: dict[str, Any]) -> dict[str, Any]:
    """An OperationOutcome of ``issues`` as given (malformed ones included)."""
    return {"resourceType": "OperationOutcome", "issue": list(issues)}


def fhir_answer(status: int, body: object) -> httpx.Response:
    """A scripted answer with ``body`` as FHIR JSON."""
    return httpx.Response(status, content=orjson.dumps(body), headers={"Content-Type": "application/fhir+json"})


def scripted_fhir(script: Script) -> FhirClient:
    """A FhirClient of ``BASE`` over ``script``, its token ``TOKEN``, retries recorded, never slept."""
    return FhirClient(BASE, StaticTokenSource(TOKEN), http=script.client(), retry=recording_policy([]))
