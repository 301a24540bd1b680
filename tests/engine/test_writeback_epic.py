"""Epic's note write profile (draft-note §7, vendors.md §2) against the sandbox EHR over a real socket."""

from __future__ import annotations

from dataclasses import replace

from connectors.fhir import FhirClient
from engine.writeback import write_note
from tests.engine.helpers import connect_backend
from tests.engine.writeback_helpers import FAST, enqueue, server_notes, set_tenant


def test_dwb18_epic_takes_inline_data_only_never_a_binary_url(world, sb, http, request_log) -> None:
    """draft-note §7: Epic takes text/plain as base64 ``data`` only; a note over the inline limit (lowered by the
    operator) still goes inline, never as a Binary referenced by url, though the server allows Binary create (it went
    through a Binary, which Epic does not take)."""
    set_tenant(world)
    conn = connect_backend(
        world, sb, http=http, scope="system/*.rs system/DocumentReference.c system/Binary.c", provider_id="epic"
    )
    patient = sb.admin.patients()[0]
    client = FhirClient(sb.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    encounter = next(r["id"] for page in client.search_pages("Encounter", {"patient": patient}) for r in page.resources)
    note = enqueue(world, conn, text="x" * 300, patient_id=patient, encounter_id=encounter)
    done = write_note(world.env, replace(FAST, inline_max_bytes=100), note.id)
    assert done.state == "written" and not done.binary_id, done.reason
    attachment = server_notes(world, conn, sb, note)[0]["content"][0]["attachment"]
    assert "data" in attachment and "url" not in attachment
    assert request_log.paths("/fhir/Binary", "POST") == []
