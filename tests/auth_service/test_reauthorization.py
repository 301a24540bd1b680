"""A patient's new authorization takes over the connection it replaces (``reauthorization``), over real sockets
against the sandbox EHR and the auth service's own callback flow.

Before, every sign-in made a new connection: a ``needs_reauth`` patient who signed in again got a second one (a new
partition pulling the whole record again, warehouse rows twice, the old one ``needs_reauth`` for ever, notes waiting
on it waiting for good); one who clicked connect twice got two active connections syncing the same record."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from engine.models import SyncCursor
from engine.writeback.queue import due_runs
from store.models import AuditEvent, Connection, utcnow
from store.outbox import NoteInput, enqueue_note, transition
from store.outbox_queue import waiting_code
from tests.auth_service.ehr import patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.test_flows_sandbox import connect, register
from tests.auth_service.test_patient_client_rejected import _status_page
from tests.auth_service.test_reissued_refresh_token import _refresh_tokens

STATUS = "/api/integrations/smart/status"
MARK = utcnow() - timedelta(days=2)


def _status(svc: Any, conn_id: str) -> dict[str, Any]:
    return dict(svc.admin("GET", STATUS, params={"connection_id": conn_id}).json())


def _needs_reauth(sandbox: Any, svc: Any, conn_id: str) -> None:
    """The EHR refuses the connection's refresh token (SAL-25); the token itself stays live at the sandbox."""
    fault = {"kind": "oauth_error", "path": "/oauth/token", "error": "invalid_grant", "times": 1}
    sandbox_admin(sandbox, "faults", fault)
    refused = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
    assert refused.status_code == 409 and _status(svc, conn_id)["status"] == "needs_reauth", refused.text
    sandbox_admin(sandbox, "faults", method="DELETE")


def _waiting_note(svc: Any, conn_id: str, patient: str) -> str:
    """A draft note whose POST may be stored, waiting for its connection (``pending``, ``connection_needs_reauth``)."""
    fields = {"title": "Follow-up", "content_type": "text/plain", "body": "x", "body_bytes": 1, "produced_by": "t"}
    note = NoteInput("t1", conn_id, uuid.uuid4().hex, patient, **fields)
    record, _ = enqueue_note(svc.ctx.db, note, actor="test")
    waiting = waiting_code("needs_reauth")
    return transition(svc.ctx.db, record, "pending", reason_code=waiting, maybe_stored=True).id


def _patient_connections(svc: Any, patient: str) -> list[tuple[str, str]]:
    with svc.ctx.db.session() as session:
        rows = session.execute(select(Connection.id, Connection.status).where(Connection.patient_id == patient))
        return sorted((str(cid), str(status)) for cid, status in rows)


def test_sal34_a_needs_reauth_connection_signed_into_again_is_taken_over_with_its_marks_and_waiting_note(
    make_settings: Any, sandbox: Any
) -> None:
    """Same connection id, active, new tokens (the old grant's revoked at the EHR), sync marks kept, no second row;
    the note waiting on it is woken; the status API and the patient's page say reconnected. Another patient's
    sign-in meanwhile makes its own connection and takes nothing over."""
    client = f"reauth-{uuid.uuid4().hex[:8]}"
    pid, other = patient_ids(sandbox)[2], patient_ids(sandbox)[3]
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        register(sandbox, svc, client, "public")
        conn_id = connect(sandbox, svc, client, pid)
        with svc.ctx.db.session() as session, session.begin():
            session.add(
                SyncCursor(connection_id=conn_id, stream="rest", resource_type="Condition", high_water_mark=MARK)
            )
        old_access = svc.ctx.vault.get_access_token(conn_id)
        version = svc.ctx.vault.token_info(conn_id).version
        _needs_reauth(sandbox, svc, conn_id)
        note_id = _waiting_note(svc, conn_id, pid)
        (old_refresh,) = _refresh_tokens(sandbox, client)

        other_id = connect(sandbox, svc, client, other)  # another patient: a connection of its own
        assert other_id != conn_id and _status(svc, conn_id)["status"] == "needs_reauth"

        assert connect(sandbox, svc, client, pid) == conn_id  # before: a new connection id
        assert _patient_connections(svc, pid) == [(conn_id, "active")]
        status = _status(svc, conn_id)
        assert status["reauthorized_at"] and "patient/*.rs" in status["granted_scopes"].split()
        assert svc.ctx.vault.get_access_token(conn_id) != old_access
        assert svc.ctx.vault.token_info(conn_id).version > version
        revoked = _refresh_tokens(sandbox, client)
        assert revoked.pop(old_refresh) is True and False in revoked.values()  # the old grant revoked, the new live
        with svc.ctx.db.session() as session:
            cursor = session.get(SyncCursor, (conn_id, "rest", "Condition"))
            assert cursor is not None and cursor.high_water_mark == MARK
            audited = session.scalar(
                select(func.count()).where(
                    AuditEvent.connection_id == conn_id, AuditEvent.action == "connection.reauthorized"
                )
            )
            assert audited == 1
        runs, _ = due_runs(svc.ctx.db, utcnow(), after=None, stalled_after_s=600)
        assert [r.note_id for r in runs] == [note_id]  # woken: the note outbox sensor asks for its run
        page = " ".join(_status_page(svc, conn_id).text.split())
        assert "You're reconnected" in page and "Reconnected " in page


def test_sign_ins_of_another_user_or_after_a_disconnect_make_new_connections_a_second_click_does_not(
    make_settings: Any, sandbox: Any
) -> None:
    """A connection of the same patient signed into by another user (fhirUser) is not taken over, nor a disconnected
    one (the patient revoked it); connecting again while active renews that one instead of syncing it twice."""
    client = f"reauth-{uuid.uuid4().hex[:8]}"
    pid = patient_ids(sandbox)[5]
    with running_service(make_settings, sandbox, smart_practice(sandbox, client)) as svc:
        register(sandbox, svc, client, "public")
        proxy = connect(sandbox, svc, client, pid)
        with svc.ctx.db.session() as session, session.begin():  # as a proxy's sign-in (a RelatedPerson) stores it
            user = f"{sandbox.fhir_base}/RelatedPerson/rp-1"
            session.execute(update(Connection).where(Connection.id == proxy).values(fhir_user=user))
        _needs_reauth(sandbox, svc, proxy)
        own = connect(sandbox, svc, client, pid)
        assert own != proxy and _status(svc, proxy)["status"] == "needs_reauth"
        assert connect(sandbox, svc, client, pid) == own  # before: a second active connection of the same patient
        assert _status(svc, own)["reauthorized_at"]
        gone = svc.admin("POST", "/api/integrations/smart/disconnect", json={"connection_id": own})
        assert gone.json()["status"] == "disconnected", gone.text
        fresh = connect(sandbox, svc, client, pid)
        assert fresh not in (own, proxy) and _status(svc, fresh)["reauthorized_at"] is None
        assert _patient_connections(svc, pid) == sorted(
            [(proxy, "needs_reauth"), (own, "disconnected"), (fresh, "active")]
        )
