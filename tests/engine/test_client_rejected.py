"""A backend/group connection whose re-acquired token the EHR refuses too is ``client_rejected`` in the same run
(issue 10), against the sandbox over real sockets.

The connectors refresh a token once on 401; a second 401 raises FhirUnauthorizedError. The engine then asks
the vault to confirm (``vault.confirm_unauthorized``), which marks the connection ``client_rejected`` and stops
the run with a message saying to check the client registration, instead of failing the request as a plain
``fhir_unauthorized`` and leaving the connection ``active`` until its next request.
"""

from __future__ import annotations

import httpx
import pytest

from engine import run_bulk_export, runs
from engine.errors import ConnectionNotSyncableError
from sandbox import SandboxServer
from store.errors import ClientRejectedError
from store.models import Connection
from tests.engine.helpers import SyncWorld, add_fault, connect_backend, sandbox_patients
from tests.engine.job_runs import run_sync, sync_type

GROUP = "grp0"


def _status(world: SyncWorld, connection_id: str) -> str:
    with world.env.db.session() as session:
        row = session.get(Connection, connection_id)
        assert row is not None
        return str(row.status)


@pytest.mark.parametrize("path", ["/fhir/Group", "/bulk/status", "/bulk/files"], ids=["kickoff", "poll", "download"])
def test_bulk_request_refused_after_token_reacquisition_marks_client_rejected(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, path: str
) -> None:
    conn = connect_backend(world, shared_sb, http=http, group_id=GROUP)
    assert run_bulk_export(world.env, conn, "healthy").status == "completed"
    # the EHR now refuses every token of this client (registration revoked, key or scopes changed, ...)
    add_fault(http, shared_sb, "expired_token", path=path, times=None)
    try:
        report = run_bulk_export(world.env, conn, "rejected")
    finally:
        shared_sb.admin.clear_faults()
    assert report.status == "failed" and report.error is not None
    assert report.error.startswith("client_rejected: "), report.error
    assert "check the client registration" in report.error
    assert _status(world, conn) == "client_rejected", "marked in the run that saw the second 401"
    run = runs.require(world.env.db, "rejected")
    assert run.status == "failed" and "check the client registration" in (run.error or "")

    with pytest.raises(ConnectionNotSyncableError, match="is client_rejected, not active"):
        run_bulk_export(world.env, conn, "still-rejected")  # the state answers: no token call, no request


def test_rest_request_refused_after_token_reacquisition_marks_client_rejected(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client
) -> None:
    """The engine's REST path with a backend token: a backend connection reading one patient's record.

    Production's jobs never run the per-type steps for a backend connection (it exports in bulk, and since
    issue 12 its partition is in ``bulk_connections``, which the per-type assets refuse), so the type's two
    steps run as the engine runs them (``sync_type``); the refusal of any further run goes through ``run_sync``.
    """
    conn = connect_backend(world, shared_sb, http=http)
    with world.env.db.session() as session:
        row = session.get(Connection, conn)
        assert row is not None
        row.patient_id = sandbox_patients(http, shared_sb)[0]
        session.commit()
    assert sync_type(world, conn, "Patient").error is None
    add_fault(http, shared_sb, "expired_token", path="/fhir/Patient", times=None)
    try:
        with pytest.raises(ClientRejectedError, match="check the client registration"):
            sync_type(world, conn, "Patient")  # in a run, the landing step fails with this error
    finally:
        shared_sb.admin.clear_faults()
    assert _status(world, conn) == "client_rejected", "marked in the run that saw the second 401"
    with pytest.raises(ConnectionNotSyncableError, match="client_rejected"):
        run_sync(world, conn, types=["Condition"])  # the state answers: every further request would be refused
