"""The AI label of a written note (draft-note §8): in ``description`` and the attachment title whatever the note's
content, and in ``meta.tag``, as the EHR stores the note (the sandbox over a real socket)."""

from __future__ import annotations

from connectors.writeback import DRAFT_LABEL
from engine.writeback import write_note
from tests.engine.helpers import connect_backend
from tests.engine.writeback_helpers import FAST, enqueue, server_notes, set_tenant, writable_connection

PDF = b"%PDF-1.4\n" + b"0" * 200 + b"\n%%EOF"
AI_TAG = {"system": "urn:ehrsync:tags", "code": "ai-generated"}


def test_dwb19_81_every_written_note_carries_the_ai_label_in_description_and_the_ai_tag(world, sb, http) -> None:
    """DWB-81: ``description`` carries the DWB-19 label, the attachment title the same one, and ``meta.tag`` the
    ``ai-generated`` tag, for a text note and for a PDF (whose body has no banner: the label is its only AI text),
    on a generic server and on Oracle Health (whose profile rewrites the PDF's contentType, never the label)."""
    text_conn = writable_connection(world, sb, http)
    set_tenant(world, allowFinalNotes=True)
    oracle = connect_backend(world, sb, http=http, scope="system/*.rs system/DocumentReference.c", provider_id="cerner")
    patient = sb.admin.patients()[0]
    notes = [
        (text_conn, enqueue(world, text_conn, title="Follow-up visit")),
        (text_conn, enqueue(world, text_conn, pdf=PDF, title="Scan")),
        (oracle, enqueue(world, oracle, pdf=PDF, patient_id=patient, doc_status="final", clinician_approved=True)),
    ]
    for conn, note in notes:
        assert write_note(world.env, FAST, note.id).state == "written"
        [doc] = server_notes(world, conn, sb, note)
        label = f"{DRAFT_LABEL}: {note.title}"
        assert (doc["description"], doc["content"][0]["attachment"]["title"]) == (label, label)
        assert AI_TAG in doc["meta"]["tag"]
