"""The log sweep of ``test_log_sweep.py`` over the failure paths, where leaks usually are (ARCHITECTURE.md
"Logging", SAL-38, DWB-62).

Real servers repeat the request in their error answers; the sandbox's ``echo`` fault does (sandbox.echo_fault):
every request header (the Authorization), the query (``patient=``, a signed file URL's signature), the body (a
token request's code, verifier, refresh token, client assertion; a note's text) and the patient's name. Driven
here: a code exchange answered 400 ``invalid_grant`` echoing the request; a backend connection's
client_credentials refused ``invalid_client`` echoing the assertion; REST searches answered by a proxy's 400 page
and an application server's 500 page (retried until spent) both echoing the request, a search refused 400 with an
OperationOutcome whose diagnostics echo the request and name the patient, and a searchset whose error
OperationOutcome quotes the patient; a Bulk kick-off refused 400 with an OperationOutcome quoting the patient, a Bulk
status answered 400 with an OperationOutcome echoing the request, and a signed Bulk file URL answered by an echoing
500 page; a note's write-back refused 422 with an OperationOutcome
echoing the note's text and the patient; a token refresh answered ``invalid_grant`` echoing the refresh token.

Swept: every log record at an operator's levels, the Dagster runs' event logs (failure events, tracebacks and
metadata, as the UI shows them), what ``ehrsync sync`` prints of the failing runs, and what the admin API answers
about it all (its error answers, the audit trail, the connection's status, the note's reason, the sync runs).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dagster import DagsterInstance, EventLogEntry

from auth_service.core.config import load_settings
from ehrsync.progress import SyncProgress, summary_lines, type_rows
from ehrsync.run_now import SyncNowResult, run_sync_now
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions
from pipelines.resources import EhrHttpResource, default_resources
from sandbox import SandboxServer
from tests.auth_service.ehr import Service, patient_ids, running_service, sandbox_admin
from tests.pipelines.log_sweep import (
    OPERATOR_LEVELS,
    SweepHandler,
    Wire,
    capture,
    connect_through_pages,
    consent_then_callback,
    patient_phi,
    recorded_sandbox_server,
    sweep_environment,
)
from tests.pipelines.test_log_sweep import BACKEND_CLIENT, NOTE_TEXT, PATIENT_CLIENT, event_log, phi_in, practice

#: A signed file URL's signature (sandbox ``bulk_signed_file_urls``): a bearer credential to the file.
SIGNATURE = re.compile(r"X-Amz-Signature=[0-9a-f]{16}")


@pytest.fixture
def recorded_sandbox() -> Iterator[tuple[SandboxServer, Wire]]:
    with recorded_sandbox_server() as recorded:
        yield recorded


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return sweep_environment(tmp_path, monkeypatch)


def fault(sandbox: SandboxServer, kind: str, path: str, **fields: Any) -> None:
    sandbox_admin(sandbox, "faults", {"kind": kind, "path": path, **fields})


def clear_faults(sandbox: SandboxServer) -> None:
    sandbox_admin(sandbox, "faults", method="DELETE")


def echo(sandbox: SandboxServer, path: str, status: int, shape: str, **fields: Any) -> None:
    """An error answer of ``status`` repeating the request (sandbox.echo_fault)."""
    fault(sandbox, "echo", path, body_status=status, echo_as=shape, **fields)


def answered(logs: SweepHandler, what: str, response: httpx.Response) -> None:
    """What the admin API answered: the host app shows and keeps it, so it is swept as a log line is."""
    logs.add(logs.stage, f"admin api: {what}", f"{response.status_code} {response.text}")


def refused_setup(svc: Service, sandbox: SandboxServer, logs: SweepHandler, found: dict[str, str]) -> dict[str, str]:
    """Clients registered; a connect whose code exchange is refused echoing the request, then one that works; a
    backend connection refused echoing its assertion; a draft note. Returns the connection and note ids."""
    secret = secrets.token_urlsafe(24)
    found.update({"client secret": secret, "api key": svc.api_key})
    client = {"client_id": PATIENT_CLIENT, "client_type": "confidential-symmetric", "client_secret": secret}
    sandbox_admin(sandbox, "clients", {**client, "redirect_uris": [svc.redirect_uri]})
    jwks_url = f"{svc.base_url}/api/integrations/ehr/jwks"
    backend = {"client_id": BACKEND_CLIENT, "client_type": "backend", "jwks_url": jwks_url}
    sandbox_admin(sandbox, "clients", {**backend, "allowed_scopes": "system/*.rs"})
    assert svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"clientSecret": secret}).is_success
    logs.stage = "connect"
    patient = patient_ids(sandbox)[0]
    with httpx.Client(base_url=svc.base_url, timeout=30) as browser:
        link = svc.admin("POST", "/api/integrations/connect-links", json={"user_ref": "host-user-1"}).json()["url"]
        echo(sandbox, "/oauth/token", 400, "oauth", error="invalid_grant")
        carried, refused = consent_then_callback(browser, link, patient, "p-smart")
        assert refused.status_code >= 400, refused.text[:300]
        found.update({f"refused {k}": v for k, v in carried.items()})
        logs.add("connect", "callback page", refused.text)
        link = svc.admin("POST", "/api/integrations/connect-links", json={"user_ref": "host-user-1"}).json()["url"]
        found.update(connect_through_pages(browser, link, patient, "p-smart"))
    ids = {"patient": svc.admin("GET", "/api/integrations/smart/status").json()["connection_id"]}
    logs.stage = "backend"
    echo(sandbox, "/oauth/token", 400, "oauth", error="invalid_client")
    body = {"provider": "generic", "scope": "system/*.rs"}
    refused = svc.admin("POST", "/api/integrations/admin/backend-connections", json=body)
    assert refused.status_code == 409, refused.text
    answered(logs, "backend refused", refused)
    created = svc.admin("POST", "/api/integrations/admin/backend-connections", json=body)
    assert created.status_code == 201, created.text
    ids["backend"] = created.json()["connection_id"]
    logs.stage = "note"
    note = {"connectionId": ids["patient"], "idempotencyKey": "sweep-note-0002", "title": "Follow-up"}
    posted = svc.admin("POST", "/api/ehr/notes", json={**note, "text": NOTE_TEXT, "producedBy": "scribe-model v3"})
    assert posted.status_code == 201, posted.text
    ids["note"] = posted.json()["noteId"]
    return ids


def fast_http(settings: PipelineSettings) -> dict[str, Any]:
    """The production EHR client resource, retrying after 0.05 s (not 2 s): the same retries, no minutes waited."""
    bound = default_resources(settings)["ehr_http"]
    assert isinstance(bound, EhrHttpResource)
    fields = ("fetch_allowed_hosts", "max_response_bytes", "request_deadline_s")
    return {"ehr_http": EhrHttpResource(**{f: getattr(bound, f) for f in fields}, retry_min_s=0.05, retry_cap_s=0.2)}


def cli_output(logs: SweepHandler, result: SyncNowResult, events: list[EventLogEntry]) -> None:
    """What ``ehrsync sync`` prints of a failing run: its progress lines, the table and the failure it exits with."""
    lines: list[str] = []
    progress = SyncProgress(lines.append)
    for entry in events:
        progress(entry)
    lines += summary_lines(
        type_rows(result.materializations, result.step_errors),
        run_id=result.run_id,
        job_name=result.job_name,
        success=result.success,
        failed_steps=result.failed_steps,
    )
    lines.append(f"run {result.run_id} failed steps: {', '.join(result.failed_steps)}")
    logs.add(logs.stage, "ehrsync sync output", "\n".join(lines))
    logs.add(logs.stage, "run_sync_now step errors", repr(result.step_errors))


def failing_runs(sandbox: SandboxServer, logs: SweepHandler, ids: dict[str, str], phi: dict[str, str]) -> None:
    """A REST sync, two Bulk exports and the note's write-back, each the real job in-process, each refused."""
    settings = PipelineSettings.from_env()
    with DagsterInstance.ephemeral() as instance:
        logs.stage = "sync"
        echo(sandbox, "/fhir/Encounter", 400, "html", times=None)  # a proxy's 400 page
        echo(sandbox, "/fhir/Observation", 500, "html", times=None)  # an app server's 500 page, retried until spent
        quoted = f"results for {phi['given name']} {phi['family name']} (born {phi['birthDate']}) are incomplete"
        fault(sandbox, "search_error_outcome", "/fhir/Condition", times=None, error_description=quoted)
        echo(sandbox, "/fhir/Procedure", 400, "outcome", error="invalid", times=None)  # diagnostics name the patient
        printed: list[str] = []
        synced = run_sync_now(
            ids["patient"], settings=settings, instance=instance, resources=fast_http(settings), on_event=printed.append
        )
        assert not synced.success and len(synced.failed_steps) >= 4, synced.failed_steps
        assert "landing__Procedure" in synced.failed_steps, synced.failed_steps
        cli_output(logs, synced, printed)
        event_log(logs, instance, synced.run_id)
        clear_faults(sandbox)
        logs.stage = "bulk"
        echo(sandbox, "/fhir/$export", 400, "outcome", error="invalid", error_description=quoted, times=None)
        printed = []
        bulk = run_sync_now(
            ids["backend"], settings=settings, instance=instance, resources=fast_http(settings), on_event=printed.append
        )
        assert not bulk.success, bulk.failed_steps
        cli_output(logs, bulk, printed)
        event_log(logs, instance, bulk.run_id)
        clear_faults(sandbox)
        echo(sandbox, "/bulk/status/", 400, "outcome", error="processing", times=None)
        bulk = run_sync_now(ids["backend"], settings=settings, instance=instance, resources=fast_http(settings))
        assert not bulk.success, bulk.failed_steps
        event_log(logs, instance, bulk.run_id)
        clear_faults(sandbox)
        sandbox_admin(sandbox, "settings", {"bulk_signed_file_urls": True})
        echo(sandbox, "/bulk/files/", 500, "html", times=None)
        bulk = run_sync_now(ids["backend"], settings=settings, instance=instance, resources=fast_http(settings))
        assert not bulk.success, bulk.failed_steps
        event_log(logs, instance, bulk.run_id)
        clear_faults(sandbox)
        logs.stage = "writeback"
        echo(sandbox, "/fhir/DocumentReference", 422, "outcome", error="business-rule", method="POST", times=None)
        job = build_definitions(settings).resolve_job_def("write_back_note")
        config = {"ops": {"write_note_to_ehr": {"config": {"note_id": ids["note"], "version": 1}}}}
        written = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
        event_log(logs, instance, written.run_id)
        clear_faults(sandbox)


def refused_refresh_and_readback(svc: Service, sandbox: SandboxServer, logs: SweepHandler, ids: dict[str, str]) -> str:
    """A refresh refused ``invalid_grant`` echoing the refresh token; then what the admin API says of it all. Returns
    the note's ``/outcome`` answer: the EHR's own words refusing it (PHI on purpose, so never swept as a log)."""
    logs.stage = "refresh"
    echo(sandbox, "/oauth/token", 400, "oauth", error="invalid_grant")
    refused = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": ids["patient"]})
    assert refused.status_code >= 400, refused.text
    answered(logs, "refresh refused", refused)
    logs.stage = "readback"
    status = svc.admin("GET", "/api/integrations/smart/status", params={"connection_id": ids["patient"]})
    assert status.json()["status"] == "needs_reauth", status.text
    answered(logs, "connection status", status)
    note = svc.admin("GET", f"/api/ehr/notes/{ids['note']}")
    assert note.json()["state"] == "failed" and note.json()["lastHttpStatus"] == 422, note.text  # the EHR refused it
    assert note.json()["outcomeIssues"] == 1, note.text
    answered(logs, "note", note)
    outcome = svc.admin("GET", f"/api/ehr/notes/{ids['note']}/outcome")
    assert outcome.status_code == 200, outcome.text
    audit = svc.admin("GET", "/api/integrations/admin/audit", params={"limit": 1000})
    assert len(audit.json()) >= 5, audit.text
    answered(logs, "audit", audit)
    for connection in ids["patient"], ids["backend"]:
        answered(logs, "sync runs", svc.admin("GET", "/api/ehr/sync", params={"connectionId": connection}))
    return outcome.text


def test_no_token_code_secret_or_phi_in_any_log_record_of_the_failure_paths(
    recorded_sandbox: tuple[SandboxServer, Wire], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SAL-38 and DWB-62 over every record, run event and admin answer of the refused calls of one flow; DWB-51: the
    refused note's ``/outcome`` answer alone holds the EHR's diagnostics, without any credential."""
    sandbox, wire = recorded_sandbox
    found: dict[str, str] = {"vault key": env["INTEGRATIONS_TOKEN_ENC_KEY"]}
    found["signing key"] = "".join(env["EHR_JWT_PRIVATE_KEY"].splitlines()[1:3])
    phi = {**patient_phi(sandbox.state.store.read("Patient", patient_ids(sandbox)[0])), "note text": NOTE_TEXT}
    service = running_service(lambda **o: load_settings(**{**env, **o}), sandbox, practice(sandbox.fhir_base))
    with capture(OPERATOR_LEVELS) as logs, service as svc:
        ids = refused_setup(svc, sandbox, logs, found)
        service_factory = logging.getLogRecordFactory()
        monkeypatch.setattr(logging, "_logRecordFactory", logging.LogRecord)  # a Dagster process's records
        failing_runs(sandbox, logs, ids, phi)
        monkeypatch.setattr(logging, "_logRecordFactory", service_factory)
        outcome = refused_refresh_and_readback(svc, sandbox, logs, ids)
    assert {"code", "code_verifier", "client_assertion", "refresh_token", "authorization"} <= wire.seen.keys()
    issued = {f"sandbox-issued {rec.kind} token": t for t, rec in sandbox.state.auth.tokens.items()}
    wired = {f"{name} #{i}": v for name, values in wire.seen.items() for i, v in enumerate(sorted(values))}
    secret_values = {**found, **issued, **wired}  # an echo cut short still leaks: their first 40 characters count
    check_echoes_were_answered(logs)
    leaks = sorted(
        {(name, r.stage, r.logger) for r in logs.records for name, v in secret_values.items() if v[:40] in r.text}
        | {(name, r.stage, r.logger) for r in logs.records for name, v in phi.items() if phi_in(v, r.text)}
        | {("signed file URL", r.stage, r.logger) for r in logs.records if SIGNATURE.search(r.text)}
    )
    assert leaks == [], leaks
    # DWB-51: the note's own record of the refusal holds the EHR's words (the patient, the note) and no credential
    assert phi_in(phi["family name"], outcome) and "[REDACTED]" in outcome, outcome[:2000]
    assert [name for name, v in secret_values.items() if v[:40] in outcome] == []


#: Least records of ehrsync's own loggers per stage, and of the runs' event logs: a capture that broke fails here.
MIN_OWN = {"connect": 2, "backend": 1, "sync": 10, "bulk": 2, "writeback": 1, "refresh": 1}
MIN_EVENTS = {"sync": 50, "bulk": 15, "writeback": 5}


def check_echoes_were_answered(logs: SweepHandler) -> None:
    own = {s: sum(1 for r in logs.records if r.stage == s and r.logger.split(".")[0] in OWN) for s in MIN_OWN}
    events = {s: sum(1 for r in logs.records if r.stage == s and r.logger == "dagster event log") for s in MIN_EVENTS}
    assert all(own[s] >= n for s, n in MIN_OWN.items()), own
    assert all(events[s] >= n for s, n in MIN_EVENTS.items()), events
    fired = [r.text for r in logs.records if r.logger == "sandbox.faults" and "fault echo fired" in r.text]
    assert len(fired) >= 10, fired
    failures = [r.text for r in logs.records if r.logger == "dagster event log" and "STEP_FAILURE" in r.text]
    assert len(failures) >= 6, json.dumps(failures)[:2000]
    cli = [r.text for r in logs.records if r.logger == "ehrsync sync output"]
    assert len(cli) == 2 and all("failed:" in text for text in cli), cli


OWN = ("auth_service", "connectors", "engine", "pipelines", "store", "warehouse", "settings", "ehrsync")
