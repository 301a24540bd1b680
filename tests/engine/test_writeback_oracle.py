"""Oracle Health's note write profile (draft-note §7, vendors.md §3) against the sandbox EHR over a real socket:
the author under a provider token, a charset on every attachment contentType (a PDF's too), inline data only."""

from __future__ import annotations

import base64
from dataclasses import replace

from sqlalchemy import select

from engine.writeback import write_note
from store.models import AuditEvent, Connection
from tests.engine.helpers import connect_backend
from tests.engine.writeback_helpers import FAST, enqueue, server_notes, set_tenant, writable_connection

DOC_POSTS = "/fhir/DocumentReference"
PDF = b"%PDF-1.4\n" + b"0" * 200 + b"\n%%EOF"
FINAL = {"doc_status": "final", "clinician_approved": True}


def _signed_in(world, connection_id: str, fhir_user: str) -> None:
    """The connection's token was issued to ``fhir_user`` (a provider launch: persona ``user``)."""
    with world.env.db.session() as session:
        conn = session.get(Connection, connection_id)
        assert conn is not None
        conn.fhir_user = fhir_user
        session.commit()


def _oracle_backend(world, sb, http) -> str:
    set_tenant(world, allowFinalNotes=True)
    scope = "system/*.rs system/DocumentReference.c system/Binary.c"
    return connect_backend(world, sb, http=http, scope=scope, provider_id="cerner")


def test_dwb16_oracle_author_other_than_the_signed_in_provider_is_blocked_unsent(world, sb, http, request_log) -> None:
    """DWB-16: under a provider token Oracle Health files a note only as the signed-in user; another author is
    refused before any EHR call with a reason naming the problem, not left for the server to reject."""
    conn = writable_connection(world, sb, http, provider_id="cerner")
    set_tenant(world, allowFinalNotes=True)
    _signed_in(world, conn, f"{sb.fhir_base}/Practitioner/dr-who")
    other = write_note(world.env, FAST, enqueue(world, conn, author_id="dr-no", **FINAL).id)
    assert (other.state, other.reason_code) == ("blocked", "WRITE_NOT_SUPPORTED (author_not_signed_in_user)")
    assert "Practitioner/dr-no" in (other.reason or "") and "signed-in user" in (other.reason or "")
    assert request_log.paths(DOC_POSTS, "POST") == []
    same = enqueue(world, conn, author_id="dr-who", **FINAL)
    assert write_note(world.env, FAST, same.id).state == "written"
    unnamed = enqueue(world, conn, **FINAL)  # no author: Oracle takes the token's user
    assert write_note(world.env, FAST, unnamed.id).state == "written"
    assert server_notes(world, conn, sb, same)[0]["author"] == [{"reference": "Practitioner/dr-who"}]


def test_dwb16_oracle_signed_in_provider_read_from_a_versioned_or_foreign_fhir_user(
    world, sb, http, request_log
) -> None:
    """DWB-16: a fhirUser with a version (``.../Practitioner/dr-who/_history/3``) is still the signed-in provider:
    their own note is written (it was taken for a patient's token and blocked); a Practitioner of the same id on
    another server is not them, so the note is blocked before sending (it used to go out)."""
    conn = writable_connection(world, sb, http, provider_id="cerner")
    set_tenant(world, allowFinalNotes=True)
    _signed_in(world, conn, f"{sb.fhir_base}/Practitioner/dr-who/_history/3")
    own = write_note(world.env, FAST, enqueue(world, conn, author_id="dr-who", **FINAL).id)
    assert own.state == "written", own.reason
    _signed_in(world, conn, "https://elsewhere.example/r4/Practitioner/dr-who")
    posts = len(request_log.paths(DOC_POSTS, "POST"))
    foreign = write_note(world.env, FAST, enqueue(world, conn, author_id="dr-who", **FINAL).id)
    assert (foreign.state, foreign.reason_code) == ("blocked", "WRITE_NOT_SUPPORTED (author_not_signed_in_user)")
    assert len(request_log.paths(DOC_POSTS, "POST")) == posts


def test_dwb17_oracle_pdf_is_sent_with_a_charset(world, sb, http, request_log) -> None:
    """draft-note §7: Oracle Health takes PDFs, with a charset on the contentType as on every type; the PDF goes as
    ``application/pdf; charset=utf-8`` (it was refused for want of a charset and never sent)."""
    conn = _oracle_backend(world, sb, http)
    note = enqueue(world, conn, pdf=PDF, patient_id=sb.admin.patients()[0], **FINAL)
    done = write_note(world.env, FAST, note.id)
    assert done.state == "written", done.reason
    attachment = server_notes(world, conn, sb, note)[0]["content"][0]["attachment"]
    assert attachment["contentType"] == "application/pdf; charset=utf-8"
    assert base64.b64decode(attachment["data"]) == PDF


def test_dwb18_oracle_takes_inline_data_only_never_a_binary_url(world, sb, http, request_log) -> None:
    """draft-note §7: one content entry with base64 ``data``: a note over the inline limit still goes inline to
    Oracle Health, never as a Binary referenced by url (which Oracle does not take), though Binary create is allowed."""
    conn = _oracle_backend(world, sb, http)
    note = enqueue(world, conn, text="x" * 300, patient_id=sb.admin.patients()[0], **FINAL)
    done = write_note(world.env, replace(FAST, inline_max_bytes=100), note.id)
    assert done.state == "written" and not done.binary_id, done.reason
    attachment = server_notes(world, conn, sb, note)[0]["content"][0]["attachment"]
    assert "data" in attachment and "url" not in attachment
    assert request_log.paths("/fhir/Binary", "POST") == []


def _audit_details(world, note_id: str) -> list[dict]:
    with world.env.db.session() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "note.transition")).all()
        return [dict(e.detail) for e in events if e.detail.get("note_id") == note_id]


def test_dwb20_a_field_the_vendor_profile_rewrites_is_audited_by_name_only(world, sb, http, request_log) -> None:
    """DWB-20: Oracle Health's profile rewrites the attachment contentType (a charset added, DWB-17); the audit event
    recorded as the POST leaves names that field, and only its name (no value, no note text). A note sent as the
    host app gave it (a text note, already with a charset) has no rewrite in its audit."""
    conn = _oracle_backend(world, sb, http)
    pdf = enqueue(world, conn, pdf=PDF, patient_id=sb.admin.patients()[0], **FINAL)
    text = enqueue(world, conn, patient_id=sb.admin.patients()[0], **FINAL)
    assert write_note(world.env, FAST, pdf.id).state == write_note(world.env, FAST, text.id).state == "written"
    [posted] = [d for d in _audit_details(world, pdf.id) if "doc_post" in d]
    assert posted["rewritten"] == ["content.attachment.contentType"]
    assert "charset" not in repr(_audit_details(world, pdf.id)) and "pdf" not in repr(_audit_details(world, pdf.id))
    assert all("rewritten" not in d for d in _audit_details(world, text.id))
