"""What the whole-flow log sweep needs: every log record captured as an operator's handler would see it, the
secrets read off the sandbox's token endpoint as they cross the wire, and a patient's browser on the real pages.

Used by ``tests/pipelines/test_log_sweep.py`` and ``test_log_sweep_failures.py``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sandbox import SandboxConfig, SandboxServer
from tests.auth_service.keyutil import enc_key, rsa_pem
from tests.fixtures.app_db import copy_migrated_sqlite

#: What an operator turns on to debug ehrsync: its own packages at DEBUG, libraries at INFO (httpx's request lines,
#: uvicorn's access log, SQLAlchemy's statement echo, Dagster's own messages).
OPERATOR_LEVELS = {
    **dict.fromkeys(
        ("auth_service", "connectors", "engine", "pipelines", "store", "warehouse", "settings", "ehrsync"),
        logging.DEBUG,
    ),
    **dict.fromkeys(
        ("httpx", "httpcore", "uvicorn", "uvicorn.access", "uvicorn.error", "dagster", "sqlalchemy.engine"),
        logging.INFO,
    ),
}
#: Everything at DEBUG, the libraries too (SQLAlchemy's result rows, httpcore's headers): what "log it all" gives.
EVERYTHING_AT_DEBUG = {"": logging.DEBUG, **dict.fromkeys(OPERATOR_LEVELS, logging.DEBUG)}
#: Stages served by the auth service's threads while the test's clients (browser, host app) run in the main thread.
AUTH_SERVICE_STAGES = frozenset({"setup", "connect", "refresh", "backend", "note", "readback"})
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


@dataclass
class Captured:
    """One record as text (message with its args, traceback, stack, extra fields), with the stage it came in."""

    stage: str
    logger: str
    text: str


class SweepHandler(logging.Handler):
    """Keeps every record it is handed, rendered in full, tagged with the flow's current stage."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stage = "setup"
        self.records: list[Captured] = []
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        if self.stage in AUTH_SERVICE_STAGES and record.threadName == "MainThread" and record.name.startswith("http"):
            return  # the test's own browser and host app (httpx in this thread); the service serves other threads
        if record.threadName.startswith("sandbox-") and record.name.startswith("uvicorn"):
            return  # the EHR's own access log (the sandbox's server thread): what the EHR logs is not ehrsync's
        parts = [record.getMessage()]
        if record.exc_info:
            parts.append(self._formatter.formatException(record.exc_info))
        if record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(record.stack_info)
        parts += [f"{k}={v!r}" for k, v in record.__dict__.items() if k not in _STANDARD]
        self.records.append(Captured(self.stage, record.name, "\n".join(parts)))

    def add(self, stage: str, logger: str, text: str) -> None:
        """A line that reaches the operator another way (a Dagster run's event log)."""
        self.records.append(Captured(stage, logger, text))


@contextmanager
def capture(levels: dict[str, int]) -> Iterator[SweepHandler]:
    """The handler on the root logger (every record propagates there) with ``levels`` set; all restored after."""
    handler = SweepHandler()
    root = logging.getLogger()
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in ("", *levels)]
    # uvicorn's logging config (a sandbox's) keeps its loggers from the root, and access_log=False stops
    # uvicorn.access even reaching "uvicorn": the auth service's access lines must reach this handler too.
    uvicorn, access = logging.getLogger("uvicorn"), logging.getLogger("uvicorn.access")
    propagated = (uvicorn.propagate, access.propagate)
    uvicorn.propagate, access.propagate = False, True
    uvicorn.addHandler(handler)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if levels.get("") == logging.DEBUG else logging.INFO)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        uvicorn.removeHandler(handler)
        uvicorn.propagate, access.propagate = propagated
        for logger, level in saved:
            logger.setLevel(level)


@dataclass
class Wire:
    """Secrets seen at the sandbox's token endpoint: request form fields and Authorization, answer fields."""

    seen: dict[str, set[str]] = field(default_factory=dict)

    def note(self, name: str, value: object) -> None:
        if isinstance(value, str) and value:
            self.seen.setdefault(name, set()).add(value)


_FORM_SECRETS = ("code", "code_verifier", "refresh_token", "client_assertion", "client_secret")
_ANSWER_SECRETS = ("access_token", "refresh_token", "id_token")


class TokenEndpointRecorder:
    """ASGI middleware on the sandbox (a test's instrument, not ehrsync's code): notes what crosses /oauth/token."""

    def __init__(self, app: Any, wire: Wire) -> None:
        self.app = app
        self.wire = wire

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/oauth/token":
            await self.app(scope, receive, send)
            return
        sent: list[bytes] = []
        answer: list[bytes] = []

        async def reading() -> Any:
            message = await receive()
            sent.append(message.get("body", b""))
            return message

        async def answering(message: Any) -> None:
            if message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
            await send(message)

        await self.app(scope, reading, answering)
        form = parse_qs(b"".join(sent).decode())
        for name in _FORM_SECRETS:
            for value in form.get(name, []):
                self.wire.note(name, value)
        for key, value in scope["headers"]:
            if key == b"authorization":
                self.wire.note("authorization", value.decode().split(" ", 1)[-1])
        try:
            body = json.loads(b"".join(answer) or b"{}")
        except ValueError:
            return
        for name in _ANSWER_SECRETS:
            self.wire.note(name, body.get(name) if isinstance(body, dict) else None)


def connect_through_pages(browser: httpx.Client, link_url: str, patient_id: str, choice: str) -> dict[str, str]:
    """The patient's browser: connect page → health system → sandbox consent (picks the patient) → callback →
    done page. Returns the state and code it carried (they are secrets the logs must not hold)."""
    carried, done = consent_then_callback(browser, link_url, patient_id, choice)
    assert done.status_code == 303 and done.headers["location"] == "/connect/done", done.text[:300]
    assert browser.get("/connect/done").status_code == 200
    return carried


def consent_then_callback(
    browser: httpx.Client, link_url: str, patient_id: str, choice: str
) -> tuple[dict[str, str], httpx.Response]:
    """``connect_through_pages`` up to the auth service's answer to the callback, whatever it is."""
    page = browser.get(link_url)
    assert page.status_code == 200, page.text[:300]
    offered = re.findall(r'name="choice" value="([^"]+)"', page.text)
    assert choice in offered, f"the connect page offers {offered}, not {choice}"
    link = parse_qs(urlsplit(link_url).query)["link"][0]
    start = browser.get("/api/integrations/smart/login", params={"link": link, "choice": choice})
    assert start.status_code == 302, start.text[:300]
    authorize_url = start.headers["location"]
    state = parse_qs(urlsplit(authorize_url).query)["state"][0]
    consent = browser.get(authorize_url)
    assert consent.status_code == 200, consent.text[:300]
    request_id = re.search(r"name='request_id' value='([^']+)'", consent.text)
    assert request_id and f"value='{patient_id}'" in consent.text, consent.text[:500]
    approved = browser.post(
        authorize_url.split("?")[0],
        data={"request_id": request_id.group(1), "patient_id": patient_id, "decision": "approve"},
    )
    assert approved.status_code == 302, approved.text[:300]
    callback = approved.headers["location"]
    code = parse_qs(urlsplit(callback).query)["code"][0]
    return {"state": state, "code": code}, browser.get(callback)


def patient_phi(patient: dict[str, Any]) -> dict[str, str]:
    """The sandbox patient's identifying values (ARCHITECTURE.md "Logging": names, birth dates; HIPAA's address,
    phone and MRN too). Ids are not among them: the documented policy allows resource ids in logs."""
    name = patient["name"][0]
    address = patient["address"][0]
    return {
        "family name": name["family"],
        "given name": name["given"][0],
        "birthDate": patient["birthDate"],
        "address line": address["line"][0],
        "postal code": address["postalCode"],
        "phone": patient["telecom"][0]["value"],
        "MRN": patient["identifier"][0]["value"],
    }


@contextmanager
def recorded_sandbox_server() -> Iterator[tuple[SandboxServer, Wire]]:
    """A sandbox whose token endpoint's traffic is recorded (``Wire``): the secrets the sweep looks for."""
    wire = Wire()
    server = SandboxServer(SandboxConfig(patients=2, seed=11))
    server.app.add_middleware(TokenEndpointRecorder, wire=wire)
    with server:
        yield server, wire


def sweep_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """One process environment for both halves (auth service and pipelines), as a deployment shares it."""
    copy_migrated_sqlite(tmp_path / "state" / "app.db")
    values = {
        "EHRSYNC_STATE_DIR": str(tmp_path / "state"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'state' / 'app.db'}",
        "INTEGRATIONS_TOKEN_ENC_KEY": enc_key(),
        "EHR_JWT_PRIVATE_KEY": rsa_pem(),
        "EHR_JWT_KEY_ID": "sweep-kid",
        "SMART_ENABLE_WRITE": "true",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for name in ("DAGSTER_HOME", "WAREHOUSE_URL"):
        monkeypatch.delenv(name, raising=False)
    return values
