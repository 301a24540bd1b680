"""Logs never hold tokens, codes or PHI, swept over one whole flow (ARCHITECTURE.md "Logging", SAL-38, DWB-62).

Single log lines are checked where they are made; this test collects every record an operator would see with
ehrsync's packages at DEBUG and the libraries at INFO (``log_sweep.OPERATOR_LEVELS``), across: a patient's SMART
connect through the auth service's pages (connect link, health system choice, sandbox consent, PKCE, a
confidential client's secret), a token refresh, a Backend Services connection (private_key_jwt), an incremental
sync and a Bulk export through the real Dagster jobs in-process (its file URLs naming a session in their path
parameters, ``;jsessionid=``, as a Java server's URL rewriting does), and a draft note written back. The secrets are the
ones the flow used, read off the sandbox's token endpoint and the vault, so the sweep cannot pass by guessing wrong.

The auth service's stages run with its redacting record factory, as in its process; the Dagster stages run with
the plain factory, as in a Dagster process (which installs none): what they log must be clean at the source.
Resource ids (the patient's id included) are allowed in logs by that same policy and are not swept for.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dagster import DagsterInstance
from sqlalchemy import select

from auth_service.core.config import load_settings
from ehrsync.run_now import run_sync_now
from engine.models import BulkJobFile
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions
from sandbox import SandboxServer
from store import AppDatabase
from store.outbox import get_note
from tests.auth_service.ehr import Service, patient_ids, running_service, sandbox_admin
from tests.pipelines.log_sweep import (
    EVERYTHING_AT_DEBUG,
    OPERATOR_LEVELS,
    SweepHandler,
    Wire,
    capture,
    connect_through_pages,
    patient_phi,
    recorded_sandbox_server,
    sweep_environment,
)

NOTE_TEXT = "Assessment: Zanthoxylum rash resolving. Plan: recheck in 3 weeks, sweep-note-7f3."
PATIENT_CLIENT = "sweep-app"
BACKEND_CLIENT = "sweep-bulk"


@pytest.fixture
def recorded_sandbox() -> Iterator[tuple[SandboxServer, Wire]]:
    with recorded_sandbox_server() as recorded:
        yield recorded


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return sweep_environment(tmp_path, monkeypatch)


def practice(fhir_base: str) -> dict[str, Any]:
    return {
        "smartFhir": {
            "enabled": True,
            "issuer": fhir_base,
            "fhirBaseUrl": fhir_base,
            "clientId": PATIENT_CLIENT,
            "enableWrite": True,
            "enableNoteCreate": True,
        },
        "ehrIntegrations": {
            "enabledProviders": ["generic"],
            "providerConfigs": {"generic": {"fhirBaseUrl": fhir_base, "clientId": BACKEND_CLIENT, "kid": "sweep-kid"}},
            "enableBulkExport": True,
        },
    }


def auth_service_stages(
    svc: Service, sandbox: SandboxServer, logs: SweepHandler, found: dict[str, str], ids: dict[str, str]
) -> None:
    """Connect (pages, PKCE, client secret), refresh, a backend connection and a draft note, in the auth service."""
    secret = secrets.token_urlsafe(24)
    found["client secret"] = secret
    found["api key"] = svc.api_key
    jwks_url = f"{svc.base_url}/api/integrations/ehr/jwks"
    sandbox_admin(
        sandbox,
        "clients",
        {
            "client_id": PATIENT_CLIENT,
            "client_type": "confidential-symmetric",
            "client_secret": secret,
            "redirect_uris": [svc.redirect_uri],
        },
    )
    backend = {"client_id": BACKEND_CLIENT, "client_type": "backend", "jwks_url": jwks_url}
    sandbox_admin(sandbox, "clients", {**backend, "allowed_scopes": "system/*.rs"})
    assert svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"clientSecret": secret}).is_success
    logs.stage = "connect"
    link = svc.admin("POST", "/api/integrations/connect-links", json={"user_ref": "host-user-1"}).json()["url"]
    found["connect link"] = link.split("link=", 1)[1]
    with httpx.Client(base_url=svc.base_url, timeout=30) as browser:
        found.update(connect_through_pages(browser, link, patient_ids(sandbox)[0], "p-smart"))
        found.update({f"cookie {c.name}": str(c.value) for c in browser.cookies.jar})
    status = svc.admin("GET", "/api/integrations/smart/status").json()
    assert status["status"] == "active", status
    ids["patient connection"] = status["connection_id"]
    found["access token (vault)"] = svc.ctx.vault.get_access_token(status["connection_id"])
    logs.stage = "refresh"
    refreshed = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": status["connection_id"]})
    assert refreshed.status_code == 200, refreshed.text
    found["refreshed access token (vault)"] = svc.ctx.vault.get_access_token(status["connection_id"])
    logs.stage = "backend"
    created = svc.admin(
        "POST", "/api/integrations/admin/backend-connections", json={"provider": "generic", "scope": "system/*.rs"}
    )
    assert created.status_code == 201, created.text
    ids["backend connection"] = created.json()["connection_id"]
    logs.stage = "note"
    note = {
        "connectionId": status["connection_id"],
        "idempotencyKey": "sweep-note-0001",
        "title": "Follow-up",
        "text": NOTE_TEXT,
        "producedBy": "scribe-model v3",
    }
    posted = svc.admin("POST", "/api/ehr/notes", json=note)
    assert posted.status_code == 201, posted.text
    ids["note"] = posted.json()["noteId"]


def dagster_stages(logs: SweepHandler, ids: dict[str, str]) -> None:
    """The incremental sync, the Bulk export and the note's write-back, each the real job in-process."""
    settings = PipelineSettings.from_env()
    with DagsterInstance.ephemeral() as instance:
        logs.stage = "sync"
        synced = run_sync_now(ids["patient connection"], settings=settings, instance=instance)
        assert synced.success and synced.job_name == "incremental_sync", synced.failed_steps
        event_log(logs, instance, synced.run_id)
        logs.stage = "bulk"
        bulk = run_sync_now(ids["backend connection"], settings=settings, instance=instance)
        assert bulk.success and bulk.job_name == "bulk_export", bulk.failed_steps
        event_log(logs, instance, bulk.run_id)
        logs.stage = "writeback"
        job = build_definitions(settings).resolve_job_def("write_back_note")
        config = {"ops": {"write_note_to_ehr": {"config": {"note_id": ids["note"], "version": 1}}}}
        written = job.execute_in_process(run_config=config, instance=instance)
        assert written.success
        db = AppDatabase.from_url(settings.database_url)
        note = get_note(db, ids["note"])
        db.dispose()
        assert note is not None and note.state == "written", note  # the text went to the EHR: its lines are swept
        event_log(logs, instance, written.run_id)


def bulk_file_urls(database_url: str, params: str) -> list[str]:
    """The Bulk export's file URLs as fetched, each ending in ``params``: the session id did travel in them."""
    db = AppDatabase.from_url(database_url)
    try:
        with db.session() as session:
            urls = list(session.scalars(select(BulkJobFile.url)))
    finally:
        db.dispose()
    assert urls and all(url.endswith(params) for url in urls), urls
    return urls


def event_log(logs: SweepHandler, instance: DagsterInstance, run_id: str) -> None:
    """A run's event log is what the Dagster UI shows an operator: messages, metadata, errors with tracebacks."""
    for entry in instance.all_logs(run_id):
        logs.add(logs.stage, "dagster event log", f"{entry.user_message}\n{entry.dagster_event!r}")


@pytest.mark.parametrize("levels", [OPERATOR_LEVELS, EVERYTHING_AT_DEBUG], ids=["operator", "all_debug"])
def test_no_token_code_secret_or_phi_in_any_log_record_of_a_whole_flow(
    recorded_sandbox: tuple[SandboxServer, Wire],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    levels: dict[str, int],
) -> None:
    """SAL-38 and DWB-62 over every record of one flow, at an operator's levels and with everything at DEBUG."""
    sandbox, wire = recorded_sandbox
    found: dict[str, str] = {"vault key": env["INTEGRATIONS_TOKEN_ENC_KEY"]}
    found["signing key"] = "".join(env["EHR_JWT_PRIVATE_KEY"].splitlines()[1:3])
    ids: dict[str, str] = {}
    with capture(levels) as logs:
        with running_service(lambda **o: load_settings(**{**env, **o}), sandbox, practice(sandbox.fhir_base)) as svc:
            auth_service_stages(svc, sandbox, logs, found, ids)
        # A Dagster process installs no redacting record factory: its records are made plain.
        monkeypatch.setattr(logging, "_logRecordFactory", logging.LogRecord)
        found["bulk file session id"] = secrets.token_hex(16)
        sandbox_admin(sandbox, "settings", {"bulk_file_url_params": f";jsessionid={found['bulk file session id']}"})
        dagster_stages(logs, ids)
    assert bulk_file_urls(env["DATABASE_URL"], f";jsessionid={found['bulk file session id']}")
    assert {
        "code",
        "code_verifier",
        "client_assertion",
        "id_token",
        "access_token",
        "refresh_token",
    } <= wire.seen.keys()
    assert wire.seen["code"] == {found["code"]} and len(wire.seen["access_token"]) >= 3  # patient x2, backend
    issued = {f"sandbox-issued {rec.kind} token": t for t, rec in sandbox.state.auth.tokens.items()}
    wired = {f"{name} #{i}": v for name, values in wire.seen.items() for i, v in enumerate(sorted(values))}
    secret_values = {**found, **issued, **wired}
    phi = {**patient_phi(sandbox.state.store.read("Patient", patient_ids(sandbox)[0])), "note text": NOTE_TEXT}
    check_capture_saw_every_stage(logs)
    leaks = sorted(
        {(name, r.stage, r.logger) for r in logs.records for name, v in secret_values.items() if v in r.text}
        | {(name, r.stage, r.logger) for r in logs.records for name, v in phi.items() if phi_in(v, r.text)}
    )
    assert leaks == [], leaks


OWN = ("auth_service", "connectors", "engine", "pipelines", "store", "warehouse", "settings", "ehrsync")
#: Least records of ehrsync's own loggers and of the Dagster runs' event logs per stage (seen: about twice these).
MIN_OWN = {"connect": 3, "refresh": 2, "backend": 1, "note": 1, "sync": 20, "bulk": 20, "writeback": 1}
MIN_EVENTS = {"sync": 100, "bulk": 20, "writeback": 5}


def check_capture_saw_every_stage(logs: SweepHandler) -> None:
    """A capture that broke (a handler not attached, a level not set) fails here, not as an empty pass."""
    own: dict[str, int] = {}
    events: dict[str, int] = {}
    for r in logs.records:
        if r.logger.split(".")[0] in OWN:
            own[r.stage] = own.get(r.stage, 0) + 1
        elif r.logger == "dagster event log":
            events[r.stage] = events.get(r.stage, 0) + 1
    assert all(own.get(s, 0) >= n for s, n in MIN_OWN.items()), own
    assert all(events.get(s, 0) >= n for s, n in MIN_EVENTS.items()), events
    access = [r.text for r in logs.records if r.logger == "uvicorn.access" and r.stage == "connect"]
    assert any("/api/integrations/smart/callback?code=[REDACTED]" in line for line in access), access


def phi_in(value: str, text: str) -> bool:
    """``value`` as a whole word (a family name inside a longer word or a base64 token is not a leak)."""
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", text) is not None
