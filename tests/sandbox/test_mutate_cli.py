"""Mutations (admin API and ``sandbox.cli.mutate``), admin settings, and the CLI server entry point."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time

import httpx
import pytest

from sandbox import SandboxAdminError, SandboxConfig, SandboxError, SandboxServer
from sandbox.cli import mutate, run_server
from tests.sandbox.helpers import backend_token, bearer


def test_mutate_is_deterministic_per_seed_and_visible_over_rest() -> None:
    results = []
    for _ in range(2):
        with SandboxServer(SandboxConfig(patients=8, seed=4)) as sb:
            results.append(sb.admin.mutate(create=3, update=3, delete=3, seed=21))
            token = backend_token(sb)
            for ref in results[-1]["updated"] + results[-1]["created"]:
                body = httpx.get(f"{sb.fhir_base}/{ref}", headers=bearer(token)).json()
                assert body["meta"]["versionId"] == ("2" if ref in results[-1]["updated"] else "1")
                rtype = body["resourceType"]
                model = getattr(importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}"), rtype)
                model.model_validate(body)  # changed resources stay valid R4
            for ref in results[-1]["created"]:
                assert httpx.get(f"{sb.fhir_base}/{ref}", headers=bearer(token)).status_code == 200
            for ref in results[-1]["deleted"]:
                assert httpx.get(f"{sb.fhir_base}/{ref}", headers=bearer(token)).status_code == 410
    updated_deleted = [{k: v for k, v in r.items() if k != "created"} for r in results]
    assert updated_deleted[0] == updated_deleted[1]
    assert all(len(r["created"]) == len(r["updated"]) == len(r["deleted"]) == 3 for r in results)


def test_cli_mutate_talks_to_a_running_sandbox(sandbox: SandboxServer) -> None:
    token = backend_token(sandbox)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    result = mutate(sandbox.fhir_base, create=1, update=1, delete=0)
    assert len(result["created"]) == 1 and len(result["updated"]) == 1
    changed = httpx.get(
        sandbox.fhir_base + "/" + result["updated"][0].split("/")[0],
        params={"_lastUpdated": f"gt{since}"},
        headers=bearer(token),
    ).json()
    assert result["updated"][0].split("/")[1] in {e["resource"]["id"] for e in changed["entry"]}


def test_admin_settings_validation(sandbox: SandboxServer) -> None:
    with pytest.raises(SandboxAdminError) as fixed:
        sandbox.admin.settings(patients=3)
    assert fixed.value.status == 400
    with pytest.raises(SandboxAdminError) as bad:
        sandbox.admin.settings(refresh_mode="sometimes")
    assert bad.value.status == 422
    assert sandbox.admin.settings(access_token_lifetime_s=5)["access_token_lifetime_s"] == 5
    assert sandbox.admin.reset_settings()["access_token_lifetime_s"] == 3600
    with pytest.raises(SandboxAdminError):
        sandbox.admin.preapprove("no-such-client", "pat1")


def test_sal37_plain_http_refuses_non_loopback_hosts() -> None:
    with pytest.raises(SandboxError):
        run_server(patients=1, port=0, host="0.0.0.0")
    with pytest.raises(ValueError):
        SandboxConfig(patients=10_001)


def test_run_server_serves_until_interrupted() -> None:
    code = "import sandbox.cli as c; c.run_server(patients=2, port=0, seed=1, auto_approve=True)"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        url = None
        deadline = time.monotonic() + 120  # a fresh interpreter seeding the sandbox: slow on a busy CI machine
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "sandbox EHR running at" in line:
                url = line.split("running at ")[1].split()[0].removesuffix("/fhir")
            elif not line and proc.poll() is not None:
                break
        assert url is not None
        assert httpx.get(url + "/fhir/metadata", timeout=30).status_code == 200  # not httpx's 5 s
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_bdx33_background_writer_changes_data_while_clients_read() -> None:
    with SandboxServer(SandboxConfig(patients=4, seed=2)) as sb:
        token = backend_token(sb)
        start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
        sb.admin.settings(writer_interval_s=0.05)
        deadline = time.monotonic() + 60
        while sb.state.writer.rounds < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        sb.admin.settings(writer_interval_s=0)
        rounds = sb.state.writer.rounds
        assert rounds >= 3
        new = httpx.get(
            sb.fhir_base + "/Observation",
            params={"_lastUpdated": f"gt{start}", "_count": "1000"},
            headers=bearer(token),
        ).json()
        assert len(new["entry"]) >= rounds  # one created Observation per round at least
        time.sleep(0.2)
        assert sb.state.writer.rounds <= rounds + 1  # switched off
