"""``POST /api/ehr/notes`` / ``GET /api/ehr/notes/{id}``: draft notes into the write-back outbox (issue 13).

Tenant-scoped by API key; validated with errors naming the field; one note per idempotency key (a replay is the
same note, a different note under the same key is 409); the answer never carries the note's text.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from sqlalchemy import func, select

from store.models import Connection, NoteOutbox
from tests.auth_service.conftest import AppHandle

PATH = "/api/ehr/notes"
TEXT = "Assessment: stable. Plan: recheck labs in 3 months."


def _world(make_app: Any) -> tuple[AppHandle, str, str, str]:
    handle = make_app()
    key_a, key_b = handle.bootstrap("ta"), handle.bootstrap("tb")
    with handle.app.state.ctx.db.session() as session, session.begin():
        conn = Connection(
            tenant_id="ta",
            provider_id="smart",
            kind="patient",
            fhir_base="https://ehr.example/fhir",
            client_id="a",
            patient_id="pat-1",
        )
        session.add(conn)
        session.flush()
        conn_id = conn.id
    return handle, key_a, key_b, conn_id


def _body(conn_id: str, **changes: Any) -> dict[str, Any]:
    body = {
        "connectionId": conn_id,
        "idempotencyKey": "host-note-0001",
        "title": "Follow-up",
        "text": TEXT,
        "producedBy": "scribe-model v3",
        "encounter": "enc-9",
        "author": "pract-2",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def test_note_is_stored_pending_once_per_idempotency_key(make_app) -> None:
    handle, key, _, conn = _world(make_app)
    first = handle.client.post(PATH, json=_body(conn), headers={"X-API-Key": key})
    assert first.status_code == 201, first.text
    note = first.json()
    assert note["state"] == "pending" and note["version"] == 1 and TEXT not in first.text
    assert note["identifier"]["system"] == "urn:ehrsync:note-draft:ta"
    again = handle.client.post(PATH, json=_body(conn), headers={"X-API-Key": key})
    assert again.status_code == 200 and again.json()["noteId"] == note["noteId"]
    other = handle.client.post(PATH, json=_body(conn, text="something else"), headers={"X-API-Key": key})
    assert other.status_code == 409 and other.json()["error"] == "idempotency_conflict"
    with handle.app.state.ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(NoteOutbox)) == 1
    read = handle.client.get(f"{PATH}/{note['noteId']}", headers={"X-API-Key": key})
    assert read.status_code == 200 and read.json()["state"] == "pending" and TEXT not in read.text


def test_other_tenants_see_neither_the_connection_nor_the_note(make_app) -> None:
    handle, key_a, key_b, conn = _world(make_app)
    note = handle.client.post(PATH, json=_body(conn), headers={"X-API-Key": key_a}).json()
    assert handle.client.get(f"{PATH}/{note['noteId']}", headers={"X-API-Key": key_b}).status_code == 404
    refused = handle.client.post(PATH, json=_body(conn), headers={"X-API-Key": key_b})
    assert refused.status_code == 404 and refused.json()["error"] == "not_connected"
    assert handle.client.post(PATH, json=_body(conn)).status_code == 401


@pytest.mark.parametrize(
    ("changes", "status", "field"),
    [
        ({"text": None}, 400, "text"),
        ({"pdfBase64": base64.b64encode(b"%PDF-1.4 x").decode()}, 400, "text"),  # both text and PDF
        ({"text": None, "pdfBase64": "not*base64!"}, 400, "pdfBase64"),
        ({"text": None, "pdfBase64": base64.b64encode(b"plain text, not a pdf").decode()}, 400, "pdfBase64"),
        ({"patient": "pat-other"}, 400, "patient"),
        ({"noteType": "12345-6"}, 400, "noteType"),
        ({"docStatus": "final"}, 400, "docStatus"),
        ({"idempotencyKey": "short"}, 422, "body.idempotencyKey"),
        ({"title": ""}, 422, "body.title"),
        ({"producedBy": None}, 422, "body.producedBy"),
        ({"docStatus": "amended"}, 422, "body.docStatus"),
        ({"encounter": "../x"}, 422, "body.encounter"),
        ({"text": "x" * 100_001}, 422, "body.text"),
        ({"extra": 1}, 422, "body.extra"),
    ],
)
def test_bad_notes_are_refused_naming_the_field(make_app, changes, status, field) -> None:
    handle, key, _, conn = _world(make_app)
    answer = handle.client.post(PATH, json=_body(conn, **changes), headers={"X-API-Key": key})
    assert answer.status_code == status, answer.text
    body = answer.json()
    named = body.get("field") or [f["field"] for f in body.get("fields", [])]
    assert field in named, body


def test_pdf_note_is_accepted_and_bounded(make_app) -> None:
    handle, key, _, conn = _world(make_app)
    pdf = base64.b64encode(b"%PDF-1.4\n%%EOF").decode()
    answer = handle.client.post(PATH, json=_body(conn, text=None, pdfBase64=pdf), headers={"X-API-Key": key})
    assert answer.status_code == 201 and answer.json()["state"] == "pending"


def test_dwb83_provenance_fields_are_stored_and_returned_without_text(make_app) -> None:
    handle, key, _, conn = _world(make_app)
    sources = ["Encounter/enc-9", "Observation/obs-2", "Encounter/enc-9"]
    body = _body(conn, promptVersion="soap-v4.2", sourceResources=sources)
    first = handle.client.post(PATH, json=body, headers={"X-API-Key": key})
    assert first.status_code == 201, first.text
    read = handle.client.get(f"{PATH}/{first.json()['noteId']}", headers={"X-API-Key": key})
    assert read.status_code == 200 and TEXT not in read.text and "Follow-up" not in read.text
    assert read.json()["provenance"] == {
        "producedBy": "scribe-model v3",
        "promptVersion": "soap-v4.2",
        "sourceResources": ["Encounter/enc-9", "Observation/obs-2"],
        "reviewer": "pract-2",
        "ehrProvenanceId": None,
    }
    with handle.app.state.ctx.db.session() as session:
        row = session.scalars(select(NoteOutbox)).one()
        assert (row.prompt_version, row.source_resources) == ("soap-v4.2", ["Encounter/enc-9", "Observation/obs-2"])
    replay = handle.client.post(PATH, json=body, headers={"X-API-Key": key})
    assert replay.status_code == 200 and replay.json()["noteId"] == first.json()["noteId"]
    changed = handle.client.post(PATH, json={**body, "promptVersion": "soap-v5"}, headers={"X-API-Key": key})
    assert changed.status_code == 409


def test_dwb83_notes_without_provenance_fields_replay_as_before(make_app) -> None:
    handle, key, _, conn = _world(make_app)
    first = handle.client.post(PATH, json=_body(conn), headers={"X-API-Key": key})
    again = handle.client.post(PATH, json=_body(conn), headers={"X-API-Key": key})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["provenance"]["sourceResources"] == [] and again.json()["provenance"]["promptVersion"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sourceResources", ["not a reference"]),
        ("sourceResources", ["Encounter/" + "x" * 65]),
        ("sourceResources", [f"Observation/o{i}" for i in range(101)]),
        ("promptVersion", "v 1; drop"),
        ("promptVersion", "v" * 101),
    ],
)
def test_dwb83_bad_provenance_fields_are_refused_naming_the_field(make_app, field: str, value: Any) -> None:
    handle, key, _, conn = _world(make_app)
    answer = handle.client.post(PATH, json=_body(conn, **{field: value}), headers={"X-API-Key": key})
    assert answer.status_code in (400, 422) and field in answer.text and "Traceback" not in answer.text


def test_dwb51_the_ehrs_words_refusing_a_note_are_answered_only_at_its_outcome(make_app) -> None:
    """DWB-51: a refused note's OperationOutcome issues (diagnostics quoting the patient) are answered by
    ``GET .../{id}/outcome`` to the note's tenant only; the state answer, which host apps poll and may log, counts
    them and never carries their words."""
    handle, key_a, key_b, conn = _world(make_app)
    note = handle.client.post(PATH, json=_body(conn), headers={"X-API-Key": key_a}).json()
    said = "Patient Jane Doe: the note 'Assessment: stable' names an encounter this patient never had"
    issue = {"severity": "error", "code": "business-rule", "expression": ["DocumentReference.context"],
             "codings": ["urn:oid:1.2.3|59008"], "diagnostics": said, "truncated": False}  # fmt: skip
    kept = {"issues": [issue], "omitted": 2}
    empty = handle.client.get(f"{PATH}/{note['noteId']}/outcome", headers={"X-API-Key": key_a})
    assert empty.status_code == 200 and (empty.json()["issues"], empty.json()["omittedIssues"]) == ([], 0)
    with handle.app.state.ctx.db.session() as session, session.begin():
        row = session.get(NoteOutbox, note["noteId"])
        assert row is not None
        row.state, row.reason_code, row.last_http_status, row.outcome_issues = "failed", "fhir_unprocessable", 422, kept
    state = handle.client.get(f"{PATH}/{note['noteId']}", headers={"X-API-Key": key_a})
    assert state.json()["outcomeIssues"] == 1 and "Jane Doe" not in state.text and "diagnostics" not in state.text
    outcome = handle.client.get(f"{PATH}/{note['noteId']}/outcome", headers={"X-API-Key": key_a})
    assert outcome.status_code == 200 and outcome.headers["cache-control"] == "no-store"
    assert outcome.json() == {
        "noteId": note["noteId"], "state": "failed", "reasonCode": "fhir_unprocessable", "lastHttpStatus": 422,
        "issues": kept["issues"], "omittedIssues": 2,
    }  # fmt: skip
    other = handle.client.get(f"{PATH}/{note['noteId']}/outcome", headers={"X-API-Key": key_b})
    assert other.status_code == 404 and "Jane Doe" not in other.text
    assert handle.client.get(f"{PATH}/{note['noteId']}/outcome").status_code == 401


def test_dwb63_retry_is_tenant_scoped_and_refuses_a_pending_note_naming_its_state(make_app) -> None:
    """``POST .../{id}/retry``: another tenant's note is 404 (as for every note route), a pending one is 409
    ``note_not_retryable`` naming ``pending``; a failed one is retried (its body optional, unknown fields 422)."""
    from store.outbox import get_note, transition

    handle, key_a, key_b, conn = _world(make_app)
    note = handle.client.post(PATH, json=_body(conn), headers={"X-API-Key": key_a}).json()
    url = f"{PATH}/{note['noteId']}/retry"
    assert handle.client.post(url, headers={"X-API-Key": key_b}).json()["error"] == "not_found"
    assert handle.client.post(f"{PATH}/0a1b/retry", headers={"X-API-Key": key_a}).status_code == 404
    pending = handle.client.post(url, headers={"X-API-Key": key_a})
    assert pending.status_code == 409 and pending.json()["state"] == "pending", pending.text
    db = handle.app.state.ctx.db
    record = get_note(db, note["noteId"])
    assert record is not None
    transition(db, transition(db, record, "sending"), "failed", reason_code="fhir_unprocessable")
    assert handle.client.post(url, headers={"X-API-Key": key_b}).status_code == 404  # still not theirs
    odd = handle.client.post(url, json={"confirm": True}, headers={"X-API-Key": key_a})
    assert odd.status_code == 422 and odd.json()["error"] == "validation_error", odd.text
    done = handle.client.post(url, headers={"X-API-Key": key_a})
    assert done.status_code == 200 and done.json()["state"] == "pending" and done.json()["version"] == 4


def _failed_note(make_app: Any) -> tuple[Any, str, Any, Any]:
    """A note submitted through the API, then ``failed`` by a run (the app, tenant A's key, the app database and
    the failed note): one a person may retry."""
    from store.outbox import get_note, transition

    handle, key_a, _key_b, conn = _world(make_app)
    note = handle.client.post(PATH, json=_body(conn), headers={"X-API-Key": key_a}).json()
    db = handle.app.state.ctx.db
    record = get_note(db, note["noteId"])
    assert record is not None
    failed = transition(db, transition(db, record, "sending"), "failed", reason_code="fhir_unprocessable")
    return handle, key_a, db, failed


@pytest.mark.parametrize("requested_by", ["Patient/pat-1", "https://ehr.example/fhir/Patient/pat-1"])
def test_dwb63_a_retry_requested_by_a_patient_reference_is_refused_never_audited(make_app, requested_by: str) -> None:
    """``requestedBy`` is written to the audit, which never holds PHI (DWB-62): a patient's reference (what a
    patient-facing host app would send as its user's id, the ``fhirUser``) is 422 naming the field, nothing moved."""
    from sqlalchemy import select

    from store.models import AuditEvent
    from store.outbox import get_note

    handle, key_a, db, failed = _failed_note(make_app)
    url = f"{PATH}/{failed.id}/retry"
    refused = handle.client.post(url, json={"requestedBy": requested_by}, headers={"X-API-Key": key_a})
    assert refused.status_code == 422 and refused.json()["error"] == "validation_error", refused.text
    assert "requestedBy" in refused.text
    assert get_note(db, failed.id).version == failed.version  # type: ignore[union-attr]
    with db.session() as session:
        assert not [e for e in session.scalars(select(AuditEvent)) if "Patient/" in repr(e.detail)]


@pytest.mark.parametrize("confirm", [1, "true", "yes", "on"])
def test_dwb63_confirm_not_in_ehr_takes_only_json_true(make_app, confirm: object) -> None:
    """``confirmNotInEhr`` lets a note that may be in the chart be sent again: only the JSON ``true`` a person's
    action sends says so; a ``1`` or a string (a host app's form field passed through) is 422, nothing moved."""
    from store.outbox import get_note

    handle, key_a, db, failed = _failed_note(make_app)
    url = f"{PATH}/{failed.id}/retry"
    refused = handle.client.post(url, json={"confirmNotInEhr": confirm}, headers={"X-API-Key": key_a})
    assert refused.status_code == 422 and refused.json()["error"] == "validation_error", refused.text
    assert "confirmNotInEhr" in refused.text
    assert get_note(db, failed.id).version == failed.version  # type: ignore[union-attr]


@pytest.mark.parametrize("approved", [1, "true", "yes", 0, "false"])
def test_clinician_approved_takes_only_json_true_or_false(make_app, approved: object) -> None:
    """``clinicianApproved`` says a clinician approved the draft (it lets a ``final`` note be filed): pydantic's lax
    bool read ``1``, ``"true"`` or ``"yes"`` (a host app's form field passed through) as approved and stored the note
    so; each is now 422 naming the field, nothing stored."""
    handle, key, _, conn = _world(make_app)
    refused = handle.client.post(PATH, json=_body(conn, clinicianApproved=approved), headers={"X-API-Key": key})
    assert refused.status_code == 422 and refused.json()["error"] == "validation_error", refused.text
    assert [f["field"] for f in refused.json()["fields"]] == ["body.clinicianApproved"]
    with handle.app.state.ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(NoteOutbox)) == 0
