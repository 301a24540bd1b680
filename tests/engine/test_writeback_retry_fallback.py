"""DWB-32/63: a person's retry of a note the patient, type and date search settled, through the real auth service
app, the note written by the real engine to the sandbox over a real socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.fhir import FhirClient
from engine.writeback import write_note
from engine.writeback.preflight import build_payload
from tests.engine.helpers import SyncWorld
from tests.engine.retry_api import NotesApi, notes_api
from tests.engine.writeback_helpers import FAST, enqueue, writable_connection

DOC_POSTS = "/fhir/DocumentReference"
#: Oracle Health as DWB-33 has it: the identifier dropped on create, its search ignored (said so in the self link).
DROPPING = {
    "conditional_create": False,
    "create_drops_fields": ["identifier"],
    "ignored_search_params": ["identifier"],
    "report_ignored_params": "self_link",
}


@pytest.fixture
def api(world: SyncWorld, tmp_path: Path) -> Iterator[NotesApi]:
    with notes_api(world, tmp_path / "app_state") as handle:
        yield handle


def test_dwb32_63_a_retry_refused_for_duplicates_found_by_details_says_how_they_were_found(
    world, start_sandbox, http, api
) -> None:
    """Two notes exactly like this one, found by patient, type and date (they carry no identifier: the vendor drops
    it): the retry is refused ``note_duplicated_in_ehr`` as for any duplicates, its message saying what the search
    found, not that notes carry the draft's identifier (a person looking for that identifier finds none there).
    Before, it said "several notes carry this draft's identifier in the EHR"."""
    ehr = start_sandbox(**DROPPING)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    client = FhirClient(ehr.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    for _ in range(2):
        client.create(build_payload(note, "preliminary"))
    ehr.admin.set_fault("drop", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.reason_code) == ("failed", "duplicate_notes")
    answer = api.retry(note.id, {"confirmNotInEhr": True})
    assert answer.status_code == 409 and answer.json()["error"] == "note_duplicated_in_ehr", answer.text
    said = answer.json()["message"]
    assert "patient, type, date and content" in said and "identifier" not in said, said
