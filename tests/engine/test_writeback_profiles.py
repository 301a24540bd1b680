"""The vendor write profiles' rules (draft-note §7, DWB-70/71) against the sandbox EHR over a real socket, presenting
itself as Epic or Oracle Health: a rule only the draft can meet blocks the note before any request, saying what to
change; a rule the payload builder meets is in what the EHR stores."""

from __future__ import annotations

from typing import Any

from connectors.fhir import FhirClient
from connectors.writeback import DRAFT_BANNER
from engine.writeback import write_note
from tests.engine.helpers import SandboxLike, SyncWorld, connect_backend
from tests.engine.writeback_helpers import FAST, enqueue, server_notes, set_tenant

PDF = b"%PDF-1.4\n" + b"0" * 200 + b"\n%%EOF"
SCOPE = "system/*.rs system/DocumentReference.c system/Binary.c"


def _stored(world: SyncWorld, sb: SandboxLike, conn: str, patient: str) -> list[dict[str, Any]]:
    """The patient's DocumentReferences as the EHR holds them (what it received and kept)."""
    client = FhirClient(sb.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    return [r for page in client.search_pages("DocumentReference", {"patient": patient}) for r in page.resources]


def _posts(request_log) -> int:
    return len(request_log.paths("/fhir/DocumentReference", "POST") + request_log.paths("/fhir/Binary", "POST"))


def _epic(world: SyncWorld, sb: SandboxLike, http) -> tuple[str, str, str]:
    """An Epic backend connection, a patient and one of the patient's visits."""
    set_tenant(world)
    conn = connect_backend(world, sb, http=http, scope=SCOPE, provider_id="epic")
    patient = sb.admin.patients()[0]
    client = FhirClient(sb.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    encounter = next(r["id"] for page in client.search_pages("Encounter", {"patient": patient}) for r in page.resources)
    return conn, patient, encounter


def test_dwb13_70_71_epic_note_without_an_encounter_is_blocked_unsent_saying_what_to_add(
    world, sb, http, request_log
) -> None:
    """draft-note §7: Epic files a note only on a visit. A note without ``encounter`` is blocked
    ``encounter_required`` before any request (none reaches the EHR, which stores nothing) and waits for a person,
    and the reason says to submit it again with the visit's ``encounter`` id (it said only that one was required);
    the same note with its visit is written."""
    conn, patient, encounter = _epic(world, sb, http)
    before = len(_stored(world, sb, conn, patient))
    request_log.clear()
    done = write_note(world.env, FAST, enqueue(world, conn, patient_id=patient).id)
    assert (done.state, done.reason_code) == ("blocked", "WRITE_NOT_SUPPORTED (encounter_required)")
    assert "`encounter`" in (done.reason or "") and "submit the note again" in (done.reason or "")
    assert _posts(request_log) == 0 and done.attempts == 0
    assert len(_stored(world, sb, conn, patient)) == before
    fixed = write_note(world.env, FAST, enqueue(world, conn, patient_id=patient, encounter_id=encounter).id)
    assert fixed.state == "written", fixed.reason
    assert len(_stored(world, sb, conn, patient)) == before + 1


def test_dwb17_70_71_epic_pdf_is_blocked_unsent_naming_the_types_epic_takes(world, sb, http, request_log) -> None:
    """draft-note §7: Epic takes text/plain only. A PDF note is blocked ``mime_type_unsupported`` before any request
    (no Binary, no DocumentReference reaches the EHR), and the reason names the types Epic takes and says to send
    text instead (it named only the refused type)."""
    conn, patient, encounter = _epic(world, sb, http)
    before = len(_stored(world, sb, conn, patient))
    request_log.clear()
    done = write_note(world.env, FAST, enqueue(world, conn, pdf=PDF, patient_id=patient, encounter_id=encounter).id)
    assert (done.state, done.reason_code) == ("blocked", "WRITE_NOT_SUPPORTED (mime_type_unsupported)")
    assert "'application/pdf'" in (done.reason or "") and "takes text/plain" in (done.reason or "")
    assert "`text`" in (done.reason or "")
    assert _posts(request_log) == 0 and done.attempts == 0
    assert len(_stored(world, sb, conn, patient)) == before


def test_dwb14_17_70_71_oracle_note_has_period_end_and_one_content_entry(world, sb, http, request_log) -> None:
    """draft-note §7: Oracle Health requires ``context.period.end`` and takes one ``content`` entry
    (``period_end_required``, ``max_attachments``): the payload builder meets both for every vendor, the end being
    the note's own time, so the stored note has them, from one POST."""
    set_tenant(world, allowFinalNotes=True)
    conn = connect_backend(world, sb, http=http, scope=SCOPE, provider_id="cerner")
    note = enqueue(world, conn, patient_id=sb.admin.patients()[0], doc_status="final", clinician_approved=True)
    request_log.clear()
    done = write_note(world.env, FAST, note.id)
    assert done.state == "written", done.reason
    stored = server_notes(world, conn, sb, note)
    assert len(stored) == 1 and len(stored[0]["content"]) == 1
    assert stored[0]["context"]["period"]["end"] == stored[0]["date"]
    assert len(request_log.paths("/fhir/DocumentReference", "POST")) == 1


def test_dwb70_epic_size_limit_counts_the_banner_the_note_is_sent_with(world, sb, http, request_log) -> None:
    """draft-note §7/§8: Epic's limit (``max_bytes``) is on the attachment as sent, which the builder opens with the
    draft banner (DWB-80). A text note that fits only without the banner is blocked ``too_large`` before any
    request (it was checked without the banner, then sent over the limit); one that fits with it is written."""
    conn, patient, encounter = _epic(world, sb, http)
    overhead = len(f"{DRAFT_BANNER}\n\n".encode())
    limit = 1_000_000  # Epic's profile
    request_log.clear()
    over = enqueue(world, conn, text="x" * (limit - overhead + 1), patient_id=patient, encounter_id=encounter)
    done = write_note(world.env, FAST, over.id)
    assert (done.state, done.reason_code) == ("blocked", "WRITE_NOT_SUPPORTED (too_large)"), done.reason
    # the reason says why a text under the limit is over it, and by how much to shorten it (it said "note of
    # 1000001 bytes", a size the submitter never sent)
    assert "draft banner" in (done.reason or "") and "1 byte shorter" in (done.reason or ""), done.reason
    assert _posts(request_log) == 0 and done.attempts == 0
    fits = enqueue(world, conn, text="x" * (limit - overhead), patient_id=patient, encounter_id=encounter)
    written = write_note(world.env, FAST, fits.id)
    assert written.state == "written", written.reason
