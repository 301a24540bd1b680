"""DWB-32/33: a lost note the identifier cannot find (the server ignores the identifier search, or drops the
identifier it was sent) is found by patient, type and date, counted only when it matches exactly what was sent;
against the sandbox EHR over a real socket."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from connectors.fhir import FhirClient
from engine.writeback import write_note
from engine.writeback.fallback import same_note
from engine.writeback.lookup import IdentifierLookup
from engine.writeback.preflight import build_payload
from engine.writeback.reconcile import BY_DETAILS, IGNORED, reconcile, search
from store.models import Connection, NoteOutbox
from store.outbox import NoteRecord, get_note, transition
from tests.engine.writeback_helpers import FAST, enqueue, first_encounter, patient_notes, writable_connection

DOC_POSTS = "/fhir/DocumentReference"
#: An EHR like Oracle Health as DWB-33 has it: the identifier dropped on create, its search ignored (said so in the
#: self link), the patient/type/date/encounter search declared and applied (the sandbox's default).
DROPPING = {
    "conditional_create": False,
    "create_drops_fields": ["identifier"],
    "ignored_search_params": ["identifier"],
    "report_ignored_params": "self_link",
}


def _client(world, conn: str, ehr) -> FhirClient:
    return FhirClient(ehr.fhir_base, world.env.vault.token_source(conn), http=world.env.http)


def _sent(note: NoteRecord, **changes: Any) -> dict[str, Any]:
    """The DocumentReference ehrsync sends for ``note`` (``changes``: top-level elements replaced)."""
    return {**build_payload(note, "preliminary"), **changes}


def _ours(world, conn: str, ehr, note: NoteRecord) -> list[dict[str, Any]]:
    """The patient's notes on the EHR that are exactly this one (none carries an identifier here)."""
    return [r for r in patient_notes(world, conn, ehr) if same_note(r, note, _sent(note))]


def _same_second(world, note: NoteRecord, other: NoteRecord) -> NoteRecord:
    """``note`` created at ``other``'s time (two drafts of one visit, filed together)."""
    with world.env.db.session() as session:
        session.execute(update(NoteOutbox).where(NoteOutbox.id == note.id).values(created_at=other.created_at))
        session.commit()
    moved = get_note(world.env.db, note.id)
    assert moved is not None
    return moved


@pytest.mark.parametrize("with_encounter", [False, True])
def test_dwb32_33_a_lost_note_stored_without_its_identifier_is_written_by_patient_type_and_date(
    world, start_sandbox, http, request_log, with_encounter
) -> None:
    """DWB-32/33: the POST stored the note without its identifier and its answer was lost; the identifier search is
    ignored. The patient, type and date search finds it (one exact match among the patient's notes, less the one
    another draft of the same text was written as): ``written`` with its id, never POSTed again."""
    ehr = start_sandbox(**DROPPING)
    conn = writable_connection(world, ehr, http)
    extra = {"encounter_id": first_encounter(world, conn, ehr)} if with_encounter else {}
    other = write_note(world.env, FAST, enqueue(world, conn, **extra).id)  # another draft, the same text
    assert other.state == "written"
    note = _same_second(world, enqueue(world, conn, **extra), other)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, times=1)  # stored, answer lost
    done = write_note(world.env, FAST, note.id)
    found = _ours(world, conn, ehr, note)  # in the same second both drafts are the same to the search: the one
    [doc] = [r for r in found if r["id"] != other.ehr_resource_id]  # another note was written as is not this one
    assert len(found) == 2
    assert "identifier" not in doc  # the EHR dropped it: the identifier search could never have found it
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("written", doc["id"], None)
    assert len(request_log.paths(DOC_POSTS, "POST")) == 2  # the other note's and this one's: no resend


def test_dwb32_33_the_same_instant_in_another_offset_and_precision_is_the_note(world, start_sandbox, http) -> None:
    """DWB-32: a server may keep the date in its own offset with milliseconds; the same instant is the same date.
    (The note is put in the EHR as such a server keeps it; the note's own POST is lost before it is stored.)"""
    ehr = start_sandbox(**DROPPING)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    at = note.created_at.astimezone(UTC).replace(microsecond=0)
    shifted = (at - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S.000-05:00")
    stored = _client(world, conn, ehr).create(_sent(note, date=shifted))
    ehr.admin.set_fault("drop", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.ehr_resource_id) == ("written", stored.id)


@pytest.mark.parametrize("near_miss", ["one_second_later", "other_content", "other_encounter_none"])
def test_dwb32_33_a_near_miss_is_not_the_note_and_none_found_is_never_resent(
    world, start_sandbox, http, request_log, near_miss
) -> None:
    """DWB-32/33: the note's POST was lost before the EHR stored it; the EHR holds another note of the same patient
    and type one second apart, or at the same instant with other content, or at the same instant with an encounter
    this note has not. None is this note: it stays ``unknown`` (``identifier_search_ignored``) for a person, never
    ``written`` with the other's id, never sent again, and a later run adds no event."""
    ehr = start_sandbox(**DROPPING)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    sent = _sent(note)
    if near_miss == "one_second_later":
        later = note.created_at.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        other = _sent(note, date=later.strftime("%Y-%m-%dT%H:%M:%SZ"))
    elif near_miss == "other_content":
        other = build_payload(replace(note, body=note.body + " Also walks daily."), "preliminary")
    else:
        encounter = {"encounter": [{"reference": f"Encounter/{first_encounter(world, conn, ehr)}"}]}
        other = _sent(note, context={**sent["context"], **encounter})
    _client(world, conn, ehr).create(other)
    ehr.admin.set_fault("drop", path=DOC_POSTS, times=1)  # lost before the EHR stored anything
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("unknown", None, IGNORED)
    assert done.reason is not None and "every parameter applied, found no note" in done.reason
    posts = len(request_log.paths(DOC_POSTS, "POST"))
    again = write_note(world.env, FAST, note.id)
    assert (again.state, again.version) == ("unknown", done.version)
    assert len(request_log.paths(DOC_POSTS, "POST")) == posts == 2  # the other note's and the lost one: no resend
    assert _ours(world, conn, ehr, note) == []


def test_dwb32_33_two_exact_matches_fail_the_note_as_a_duplicate(world, start_sandbox, http) -> None:
    """DWB-32: two notes in the EHR that are both exactly this one (an earlier try stored it too): ``failed``
    (``duplicate_notes``) for a person, never ``written`` with either id."""
    ehr = start_sandbox(**DROPPING)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    for _ in range(2):
        _client(world, conn, ehr).create(_sent(note))
    ehr.admin.set_fault("drop", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.reason_code, done.ehr_resource_id) == ("failed", "duplicate_notes", None)


def test_dwb32_a_server_not_declaring_the_fallback_parameters_leaves_the_note_for_a_person(
    world, start_sandbox, http
) -> None:
    """DWB-32: no ``date``/``type`` search declared for DocumentReference: the fallback is not made; the note, stored,
    stays ``unknown`` (``identifier_search_ignored``) as before."""
    ehr = start_sandbox(**DROPPING, document_search_params=[])
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.reason_code) == ("unknown", IGNORED)
    assert done.reason is not None and "declares no patient, type and date search" in done.reason
    assert len(_ours(world, conn, ehr, note)) == 1


def test_dwb32_a_statement_unreadable_for_the_fallback_parameters_is_named_not_taken_for_none_declared(
    world, start_sandbox, http, caplog: pytest.LogCaptureFixture
) -> None:
    """DWB-32: DocumentReference's ``searchParam`` as a bare object (the write gate reads past it): the fallback is
    not made, and the note's reason and a warning say the statement could not be read for its search parameters.
    Before, nothing was logged and the reason said the EHR "declares no patient, type and date search", which a
    person reading it would take as the server's answer."""
    ehr = start_sandbox(**DROPPING, capability_variants=["bare_note_params"])
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, times=1)
    with caplog.at_level("WARNING", logger="engine"):
        done = write_note(world.env, FAST, note.id)
    assert (done.state, done.reason_code) == ("unknown", IGNORED)
    assert done.reason is not None and "declares no" not in done.reason, done.reason
    assert "CapabilityStatement cannot be read for its search parameters" in done.reason, done.reason
    assert "searchParam is an object" in done.reason, done.reason
    assert any("no patient, type and date search" in r.getMessage() for r in caplog.records), caplog.records
    assert len(_ours(world, conn, ehr, note)) == 1


@pytest.mark.parametrize(
    ("date", "counts"),
    [
        ("{z}", True),
        ("{z_ms}", True),
        ("{plus2}", True),
        ("{z_frac}", False),  # a fraction other than zero: not the whole second sent
        ("{minute}", False),  # no seconds: less than was sent
        ("{day}", False),
        ("{z_next}", False),
        ("2026-13-45T10:00:00Z", False),  # shaped like an instant, no date at all: not the note, no crash
        ("2026-02-30T25:61:00+00:00", False),
    ],
)
def test_dwb32_the_date_counts_only_as_the_same_instant(world, start_sandbox, http, date: str, counts: bool) -> None:
    """DWB-32: the precision rule, over the note as ehrsync builds it."""
    ehr = start_sandbox(**DROPPING)
    note = enqueue(world, writable_connection(world, ehr, http))
    sent = _sent(note)
    at = datetime.fromisoformat(str(sent["date"]).replace("Z", "+00:00"))
    forms = {
        "z": sent["date"],
        "z_ms": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "plus2": (at + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00"),
        "z_frac": at.strftime("%Y-%m-%dT%H:%M:%S.250Z"),
        "minute": at.strftime("%Y-%m-%dT%H:%MZ"),
        "day": at.strftime("%Y-%m-%d"),
        "z_next": (at + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    resource = {**sent, "id": "doc-1", "date": date.format(**forms)}
    assert same_note(resource, note, sent) is counts
    assert BY_DETAILS == "patient_type_date"


@pytest.mark.parametrize(("provider", "state"), [("cerner", "written"), ("generic", "unknown")])
def test_dwb33_a_vendor_declared_to_drop_identifier_is_searched_by_patient_type_and_date(
    world, start_sandbox, http, provider: str, state: str
) -> None:
    """DWB-33: the EHR applies the identifier search but stored the note without its identifier, so the search finds
    nothing. A vendor whose write profile declares ``drops_identifier`` (Oracle Health) is searched by patient, type
    and date too: ``written``; for one not declared so, "not found" stays ``unknown`` as before (never resent)."""
    ehr = start_sandbox(conditional_create=False, create_drops_fields=["identifier"], report_ignored_params="self_link")
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    stored = _client(world, conn, ehr).create(_sent(note))  # the lost POST as the EHR kept it
    with world.env.db.session() as session:
        session.execute(update(Connection).where(Connection.id == conn).values(provider_id=provider))
        session.commit()
    lost = transition(world.env.db, transition(world.env.db, note, "sending", attempts=1), "unknown")
    done = reconcile(world.env.db, _client(world, conn, ehr), lost, FAST)
    assert done.state == state
    assert done.ehr_resource_id == (stored.id if state == "written" else None)


def test_dwb32_a_fallback_search_ignoring_date_still_counts_only_the_exact_note(world, start_sandbox, http) -> None:
    """DWB-32: the server declares ``date`` but ignores it (its self link says so), answering with the patient's notes
    of the type: the near miss one second later is still not the note, and "none" is no proof (the reason says the
    search was not shown applied); the note is never sent again."""
    ehr = start_sandbox(**{**DROPPING, "ignored_search_params": ["identifier", "date"]})
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    later = note.created_at.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    _client(world, conn, ehr).create(_sent(note, date=later.strftime("%Y-%m-%dT%H:%M:%SZ")))
    ehr.admin.set_fault("drop", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("unknown", None, IGNORED)
    assert done.reason is not None and "not shown applied as asked" in done.reason


def _lost(world, note: NoteRecord) -> NoteRecord:
    """``note`` as a run left it after its POST's answer was lost: ``unknown``, searched for, never resent."""
    return transition(world.env.db, transition(world.env.db, note, "sending", attempts=1), "unknown")


@pytest.mark.parametrize("kept", ["size_and_hash", "labels_only"])
def test_dwb32_a_match_another_unwritten_draft_fits_as_well_is_neither_notes(
    world, start_sandbox, http, request_log, kept: str
) -> None:
    """DWB-32: two drafts of one patient and type filed in the same second, both unsettled; only the first reached
    the EHR. To the patient/type/date search its note is the second's as well (the same text; or, on a server that
    returns neither size nor hash, the same label whatever the text): the second is never ``written`` with the
    first's id (it would be lost silently), and neither is the first while the second may be it. Both stay
    ``unknown`` for a person, never sent again."""
    ehr = start_sandbox(**DROPPING)
    conn = writable_connection(world, ehr, http)
    first = enqueue(world, conn)
    second = _same_second(
        world, enqueue(world, conn, **({"text": "Other words."} if kept == "labels_only" else {})), first
    )
    stored = _sent(first)
    if kept == "labels_only":
        attachment = {k: v for k, v in stored["content"][0]["attachment"].items() if k not in ("size", "hash")}
        stored = {**stored, "content": [{"attachment": attachment}]}
    _client(world, conn, ehr).create(stored)  # the first's POST, stored, its answer lost
    first = _lost(world, first)
    ehr.admin.set_fault("drop", path=DOC_POSTS, times=1)  # the second's, lost before the EHR stored it
    done = write_note(world.env, FAST, second.id)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("unknown", None, IGNORED)
    assert done.reason is not None and "another draft of the same patient" in done.reason
    settled = reconcile(world.env.db, _client(world, conn, ehr), first, FAST)
    assert (settled.state, settled.ehr_resource_id) == ("unknown", None)
    again = write_note(world.env, FAST, second.id)
    assert (again.state, again.version) == ("unknown", done.version)  # said already: no event added
    assert len(request_log.paths(DOC_POSTS, "POST")) == 2  # the first's and the lost second's: no resend


def test_dwb32_the_fallback_search_spends_only_what_the_identifier_search_left_of_lookup_wait_s(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-32: ``lookup_wait_s`` bounds all of a note's searching in a run. An identifier search that spent it all
    (a trickling EHR) leaves no time for the patient/type/date search: it is not made (the note, stored, stays
    ``unknown`` for a later run), rather than holding the run for a second ``lookup_wait_s``. The search itself
    records when it began."""
    ehr = start_sandbox(**DROPPING)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    _client(world, conn, ehr).create(_sent(note))  # the lost POST as the EHR kept it
    lost = _lost(world, note)
    client = _client(world, conn, ehr)
    searched = search(client, lost, FAST)
    assert isinstance(searched, IdentifierLookup) and searched.ignored and searched.started is not None
    spent = replace(searched, started=time.monotonic() - FAST.lookup_wait_s - 1)
    before = len(request_log.paths(DOC_POSTS, "GET"))
    done = reconcile(world.env.db, client, lost, FAST, spent)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("unknown", None, IGNORED)
    assert done.reason is not None and "did not end whole" in done.reason
    assert len(request_log.paths(DOC_POSTS, "GET")) == before  # no patient/type/date search made
    assert reconcile(world.env.db, client, get_note(world.env.db, note.id), FAST).state == "written"  # time left


def test_dwb32_a_note_carrying_another_drafts_identifier_is_never_this_one(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-32: the server keeps identifiers but ignores their search. Another draft of the same patient, type,
    second and text was written, and an earlier copy of it is stored too (a person confirmed it absent, it was sent
    again). That copy matches this lost note in every field the fallback compares, but it carries the other
    draft's identifier: it is that draft's, so this note stays ``unknown``, never ``written`` with its id."""
    ehr = start_sandbox(
        conditional_create=False, ignored_search_params=["identifier"], report_ignored_params="self_link"
    )
    conn = writable_connection(world, ehr, http)
    other = write_note(world.env, FAST, enqueue(world, conn).id)
    assert other.state == "written"
    copy = _client(world, conn, ehr).create(_sent(other))  # the other draft's earlier stored copy
    note = _same_second(world, enqueue(world, conn), other)
    ehr.admin.set_fault("drop", path=DOC_POSTS, times=1)  # this one's POST, lost before the EHR stored it
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("unknown", None, IGNORED)
    assert copy.id != other.ehr_resource_id
    assert len(request_log.paths(DOC_POSTS, "POST")) == 3  # the other's two and this lost one: no resend


def test_dwb33_a_twin_left_unsettled_keeps_a_dropping_vendors_note_unknown_with_its_reason_code(
    world, start_sandbox, http
) -> None:
    """DWB-33: on a vendor declared to drop identifier (the identifier search applied, finding nothing), a note the
    patient/type/date search finds exactly, as it finds another unsettled draft of the same second and text, stays
    ``unknown`` with the reason code it had (searched again by a later run), its reason saying why."""
    ehr = start_sandbox(conditional_create=False, create_drops_fields=["identifier"], report_ignored_params="self_link")
    conn = writable_connection(world, ehr, http)
    with world.env.db.session() as session:
        session.execute(update(Connection).where(Connection.id == conn).values(provider_id="cerner"))
        session.commit()
    first = enqueue(world, conn)
    second = _same_second(world, enqueue(world, conn), first)
    _client(world, conn, ehr).create(_sent(first))  # one of them reached the EHR: which cannot be told
    first, lost = _lost(world, first), transition(world.env.db, _lost(world, second), "unknown", reason_code="x")
    done = reconcile(world.env.db, _client(world, conn, ehr), lost, FAST)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("unknown", None, "x")
    assert done.reason is not None and "another draft of the same patient" in done.reason
