"""The write-back of one outbox note against the sandbox EHR (issue 13, draft-note.md): payload, every gate,
lost answers with and without conditional create, 429, expired tokens, vendor profiles, the audit trail."""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import replace

import pytest
from sqlalchemy import select

from connectors.writeback import DRAFT_BANNER, DRAFT_LABEL
from connectors.writeback.vendor_check import attachment_size
from engine.writeback import write_note
from store.models import AuditEvent
from store.outbox import get_note
from tests.engine.helpers import connect_backend
from tests.engine.writeback_helpers import (
    FAST,
    NOTE_TEXT,
    binary_pdf_note,
    enqueue,
    first_encounter,
    server_notes,
    set_tenant,
    writable_connection,
)

DOC_POSTS = "/fhir/DocumentReference"


def test_dwb01_02_10_11_12_13_14_15_16_17_19_30_80_happy_path_writes_one_draft(world, sb, http, request_log) -> None:
    """DWB-01/02/10/11/12/13/14/15/16/17/19/30/80: one pending note becomes one preliminary DocumentReference."""
    conn = writable_connection(world, sb, http)
    encounter = first_encounter(world, conn, sb)
    note = enqueue(world, conn, encounter_id=encounter, author_id="pract-1", loinc_code="11488-4")
    assert str(uuid.UUID(note.draft_id, version=4)) == note.draft_id  # DWB-30: UUIDv4 before the first attempt
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.attempts, done.last_http_status) == ("written", 1, 201)
    [doc] = server_notes(world, conn, sb, note)
    assert doc["id"] == done.ehr_resource_id and doc["meta"]["versionId"] == done.ehr_version_id
    assert (doc["status"], doc["docStatus"]) == ("current", "preliminary")
    assert doc["type"]["coding"][0] == {"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}
    assert doc["type"]["text"] == "Consult note"
    assert doc["category"][0]["coding"][0]["code"] == "clinical-note"
    assert doc["subject"] == {"reference": f"Patient/{note.patient_id}"}
    assert doc["context"]["encounter"] == [{"reference": f"Encounter/{encounter}"}]
    assert doc["context"]["period"]["end"] and doc["author"] == [{"reference": "Practitioner/pract-1"}]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["date"])
    [content] = doc["content"]
    attachment = content["attachment"]
    assert attachment["contentType"] == "text/plain; charset=utf-8"
    text = base64.b64decode(attachment["data"]).decode()
    assert text.startswith(DRAFT_BANNER) and text.endswith(NOTE_TEXT) and attachment["size"] == len(text.encode())
    assert doc["description"].startswith(DRAFT_LABEL) and attachment["title"].startswith(DRAFT_LABEL)
    assert doc["identifier"] == [{"system": f"urn:ehrsync:note-draft:{world.tenant_id}", "value": note.draft_id}]
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1
    assert write_note(world.env, FAST, note.id).state == "written"  # a second run sends nothing
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


@pytest.mark.parametrize(
    ("closed", "reason"),
    [
        ("service", "vendor_disabled"),
        ("enableWrite", "vendor_disabled"),
        ("enableNoteCreate", "vendor_disabled"),
        ("scope", "missing_scope"),
        ("vendor", "vendor_disabled"),
    ],
)
def test_dwb42_43_every_closed_gate_blocks_and_sends_nothing(world, sb, http, request_log, closed, reason) -> None:
    """DWB-42/43: each switch, the granted scopes and the vendor plugin can refuse; the note is blocked unsent."""
    kwargs = {"scope": "launch/patient openid fhirUser offline_access patient/*.rs"} if closed == "scope" else {}
    if closed == "vendor":
        kwargs["provider_id"] = "ecw"
    conn = writable_connection(world, sb, http, **kwargs)
    if closed in ("enableWrite", "enableNoteCreate"):
        set_tenant(world, **{closed: False})
    config = replace(FAST, service_write_enabled=closed != "service")
    note = enqueue(world, conn)
    request_log.clear()
    done = write_note(world.env, config, note.id)
    assert (done.state, done.reason_code) == ("blocked", f"WRITE_NOT_SUPPORTED ({reason})")
    assert request_log.paths(DOC_POSTS, "POST") == [] and done.attempts == 0


def test_dwb40_create_not_in_the_capability_statement_blocks(world, start_sandbox, http, request_log) -> None:
    """DWB-40: a server whose CapabilityStatement lists no DocumentReference create is never written to."""
    ehr = start_sandbox(write_enabled=False)
    conn = writable_connection(world, ehr, http)
    done = write_note(world.env, FAST, enqueue(world, conn).id)
    assert (done.state, done.reason_code) == ("blocked", "WRITE_NOT_SUPPORTED (no_create_interaction)")
    assert request_log.paths(DOC_POSTS, "POST") == []


def test_dwb31_34_lost_answer_with_conditional_create_is_retried_into_one_note(world, sb, http, request_log) -> None:
    """DWB-31/34: the first POST is stored but its answer lost; the retry carries If-None-Exist and finds it."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("drop_response", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    assert done.state == "written" and done.last_http_status == 200  # the retry matched the stored note
    assert len(request_log.paths(DOC_POSTS, "POST")) == 2
    assert [d["id"] for d in server_notes(world, conn, sb, note)] == [done.ehr_resource_id]


def test_dwb32_33_without_conditional_create_a_lost_answer_is_unknown_then_reconciled(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-32/33: no If-None-Exist advertised: no second POST; the note goes unknown and a search finds it."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1  # never a blind retry
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])
    states = [e.outcome for e in _transitions(world, note.id)]
    assert states == ["sending", "sending", "unknown", "written"]  # the second: its POST recorded (``doc_posted``)


def test_without_conditional_create_a_note_not_found_stays_unknown_for_a_person(world, start_sandbox, http) -> None:
    """DWB-32: the request never reached the EHR and cannot be found: left unknown, not sent again."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop", path=DOC_POSTS, times=1)  # dropped before the server stored anything
    done = write_note(world.env, FAST, note.id)
    assert done.state == "unknown" and server_notes(world, conn, ehr, note) == []
    assert write_note(world.env, FAST, note.id).state == "unknown"  # a later run only searches again


def test_without_conditional_create_a_500_on_the_post_is_unknown_never_resent(
    world, start_sandbox, http, request_log
) -> None:
    """draft-note §5: only 429/503 prove nothing was stored; a 500 (or 408/502/504, e.g. a gateway timing out while
    the EHR stores the note) without If-None-Exist is an unknown outcome: reconciled, never POSTed again."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("500", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.reason_code) == ("unknown", "response_lost")
    assert write_note(world.env, FAST, note.id).state == "unknown"  # a later run only searches again
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_429_goes_back_to_pending_then_writes_once(world, sb, http, request_log) -> None:
    """draft-note §5: throttled past the client's own retries → pending with backoff, then one note."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("429", path=DOC_POSTS, times=None, retry_after="0")
    waiting = write_note(world.env, FAST, note.id)
    assert (waiting.state, waiting.last_http_status, waiting.reason_code) == ("pending", 429, "rate_limited")
    sb.admin.clear_faults()
    done = write_note(world.env, FAST, note.id)
    assert done.state == "written" and done.attempts == 2
    assert len(server_notes(world, conn, sb, note)) == 1


def test_transient_failures_are_bounded_then_failed(world, sb, http) -> None:
    """draft-note §5: a server that keeps answering 503 costs at most ``max_attempts`` attempts."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("503", path=DOC_POSTS, times=None, retry_after="0")
    states = [write_note(world.env, FAST, note.id).state for _ in range(FAST.max_attempts)]
    assert states == ["pending"] * (FAST.max_attempts - 1) + ["failed"]
    final = get_note(world.env.db, note.id)
    assert final is not None and final.reason_code == "retries_exhausted" and final.reason
    sb.admin.clear_faults()
    assert server_notes(world, conn, sb, note) == []


def test_expired_token_is_refreshed_through_the_vault(world, sb, http) -> None:
    """A 401 on the POST refreshes the grant through the vault (as syncs do) and the note is written once."""
    conn = writable_connection(world, sb, http)
    before = world.env.vault.token_info(conn)
    note = enqueue(world, conn)
    sb.admin.set_fault("expired_token", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    after = world.env.vault.token_info(conn)
    assert done.state == "written" and before is not None and after is not None
    assert after.version == before.version + 1  # refreshed once, stored by the vault
    assert len(server_notes(world, conn, sb, note)) == 1


def test_dwb02_vendor_that_rejects_preliminary_blocks_the_draft(world, sb, http, request_log) -> None:
    """DWB-02: Oracle Health's profile accepts no preliminary notes: blocked, never silently made final; the reason
    names what it takes and how such an EHR files a note (approved, final, the tenant opted in)."""
    conn = writable_connection(world, sb, http, provider_id="cerner")
    done = write_note(world.env, FAST, enqueue(world, conn).id)
    assert (done.state, done.reason_code) == ("blocked", "WRITE_NOT_SUPPORTED (draft_status_unsupported)")
    assert (
        done.reason
        == "this EHR files no note under patient tokens: write through a connection whose token is system or user"
    )
    assert request_log.paths(DOC_POSTS, "POST") == []


def test_dwb03_final_needs_the_tenant_opt_in_and_clinician_approval(world, sb, http) -> None:
    """DWB-03: ``final`` without both is blocked; with both it is sent as asked, never changed."""
    conn = writable_connection(world, sb, http)
    unapproved = write_note(world.env, FAST, enqueue(world, conn, doc_status="final", clinician_approved=True).id)
    assert (unapproved.state, unapproved.reason_code) == ("blocked", "WRITE_NOT_SUPPORTED (final_not_allowed)")
    set_tenant(world, allowFinalNotes=True)
    not_approved = write_note(world.env, FAST, enqueue(world, conn, doc_status="final").id)
    assert not_approved.state == "blocked"
    note = enqueue(world, conn, doc_status="final", clinician_approved=True)
    assert write_note(world.env, FAST, note.id).state == "written"
    assert server_notes(world, conn, sb, note)[0]["docStatus"] == "final"
    draft = enqueue(world, conn)
    assert write_note(world.env, FAST, draft.id).state == "written"
    assert server_notes(world, conn, sb, draft)[0]["docStatus"] == "preliminary"  # never finalized


def test_dwb18_large_note_goes_through_a_binary_created_first(world, sb, http, request_log) -> None:
    """DWB-18: content over the inline limit is a Binary, referenced by url, where the server allows Binary create."""
    conn, note = binary_pdf_note(world, sb, http)
    done = write_note(world.env, replace(FAST, inline_max_bytes=100), note.id)
    assert done.state == "written" and done.binary_id, done.reason
    [doc] = server_notes(world, conn, sb, note)
    attachment = doc["content"][0]["attachment"]
    assert attachment["url"] == f"Binary/{done.binary_id}" and "data" not in attachment
    assert attachment["contentType"] == "application/pdf"
    assert len(request_log.paths("/fhir/Binary", "POST")) == 1


def test_dwb18_a_note_exactly_at_the_inline_limit_goes_inline(world, sb, http, request_log) -> None:
    """DWB-18: inline is the default; only content over the limit (not at it) goes through a Binary."""
    conn, note = binary_pdf_note(world, sb, http)
    size = attachment_size(note.content_type, note.body, note.body_bytes)
    done = write_note(world.env, replace(FAST, inline_max_bytes=size), note.id)
    assert done.state == "written" and not done.binary_id, done.reason
    [doc] = server_notes(world, conn, sb, note)
    attachment = doc["content"][0]["attachment"]
    assert "url" not in attachment and attachment["size"] == size
    assert request_log.paths("/fhir/Binary", "POST") == []


def test_every_attempt_is_audited_without_note_text_or_phi(world, sb, http) -> None:
    """DWB-62: each transition is an audit event with ids, states and codes; never the note's text or title."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    write_note(world.env, FAST, note.id)
    events = _transitions(world, note.id)
    assert [e.outcome for e in events] == ["sending", "sending", "written"]
    assert (events[0].detail["attempt"], events[1].detail["doc_post"]) == (1, 1)  # its POST recorded before it left
    with world.env.db.session() as session:
        dumped = repr([(e.action, e.detail) for e in session.scalars(select(AuditEvent))])
    assert NOTE_TEXT not in dumped and "Follow-up visit" not in dumped and note.patient_id not in dumped


def _transitions(world, note_id: str) -> list[AuditEvent]:
    with world.env.db.session() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "note.transition").order_by(AuditEvent.id)
        ).all()
        return [e for e in events if e.detail.get("note_id") == note_id]


def test_dwb51_permanent_rejection_fails_with_the_servers_operation_outcome(world, sb, http, request_log) -> None:
    """DWB-51: a 422 is not retried; the note is failed with the OperationOutcome's severity and code, never its
    diagnostics (servers quote the refused request there)."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("422", path=DOC_POSTS, times=None)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.last_http_status, done.reason_code) == ("failed", 422, "fhir_unprocessable")
    assert done.reason == "error business-rule", done.reason
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1
    sb.admin.clear_faults()
    assert write_note(world.env, FAST, note.id).state == "failed"  # a person decides; no automatic retry


def test_a_grant_the_ehr_no_longer_honours_fails_the_note_without_sending(world, sb, http, request_log) -> None:
    """401 on the CapabilityStatement and the refresh refused (``invalid_grant``): failed ``needs_reauth``."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("expired_token", path="/fhir/metadata", times=None)
    sb.admin.set_fault("oauth_error", path="/oauth/token", times=None, error="invalid_grant")
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.reason_code) == ("failed", "needs_reauth")
    assert request_log.paths(DOC_POSTS, "POST") == []


def test_dwb18_41_a_large_note_without_binary_create_granted_is_blocked_before_any_post(
    world, sb, http, request_log
) -> None:
    """DWB-18/41: the server advertises Binary create but the granted scopes do not cover it (least privilege asks
    none for ``*.cruds?category=clinical-note``, which Binary has no parameter of): the note is blocked
    ``no_binary_create`` naming the scopes, and nothing is POSTed. Before, the Binary POST was refused 403 and the
    note blocked ``missing_scope``, as if DocumentReference create were missing."""
    set_tenant(world)
    conn = connect_backend(world, sb, http=http, scope="system/*.rs system/DocumentReference.c")
    pdf = b"%PDF-1.4\n" + b"0" * 200 + b"\n%%EOF"
    note = enqueue(world, conn, pdf=pdf, patient_id=sb.admin.patients()[0])
    done = write_note(world.env, replace(FAST, inline_max_bytes=100), note.id)
    assert (done.state, done.reason_code) == ("blocked", "WRITE_NOT_SUPPORTED (no_binary_create)")
    assert done.reason is not None and "granted scopes" in done.reason
    assert request_log.paths("/fhir/Binary", "POST") == [] and request_log.paths(DOC_POSTS, "POST") == []
