"""Searchset pages written as servers outside the sandbox write them (``search_shape``, sandbox.shape_fault), over a
real socket: a cursor never moves past data that was not received (BDX-27, BDX-29).

A one-element array sent as a bare object (FHIR's JSON forbids it; a naive XML-to-JSON converter writes it) was
read as no entry, or no link: the one change an incremental search found was dropped and its mark stored past it.
Link relations spelt with a capital (``Next``; RFC 8288 compares them case-insensitively) ended the paging after
the first page, on a server giving no ``total``, with the mark stored past every later page."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.errors import FhirError
from engine import cursors
from tests.engine.helpers import add_fault, connect_patient, make_environment
from tests.engine.job_runs import sync_type


def test_one_change_sent_as_a_bare_entry_object_fails_the_type_and_keeps_the_mark_bdx29(
    start_sandbox: Any, world: Any, http: Any
) -> None:
    sb = start_sandbox(patients=1)
    conn = connect_patient(world, sb, http=http)
    (ref,) = sb.admin.mutate(delete=1, seed=5)["deleted"]
    rtype = ref.partition("/")[0]
    first = sync_type(world, conn, rtype)
    assert first.error is None and first.created > 0, first.error
    mark = cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, rtype)
    assert mark is not None

    sb.admin.restore(ref)  # one change since the mark: the incremental search's page holds one entry
    add_fault(http, sb, "search_shape", path=f"/fhir/{rtype}", times=None, shape="single_objects")
    with pytest.raises(FhirError, match=r"Bundle\.entry is a JSON object, not an array"):
        sync_type(world, conn, rtype)
    assert cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, rtype) == mark  # not moved past the change

    sb.admin.clear_faults()
    again = sync_type(world, conn, rtype)
    assert again.error is None and again.created == 1, again.error


def test_a_next_link_spelt_with_a_capital_is_followed_bdx29(start_sandbox: Any, tmp_path: Any, http: Any) -> None:
    sb = start_sandbox(patients=1)
    world = make_environment(tmp_path / "paged", http=http, page_size=20)
    conn = connect_patient(world, sb, http=http)
    add_fault(http, sb, "search_shape", path="/fhir/Observation", times=None, shape="relation_case")
    shaped = sync_type(world, conn, "Observation")
    assert shaped.error is None and shaped.pages > 1, (shaped.error, shaped.pages)

    sb.admin.clear_faults()
    whole = sync_type(world, conn, "Observation", full=True)
    assert whole.error is None and whole.fetched == shaped.fetched > 20
    assert whole.created == 0  # the capitalised paging had landed every Observation already


def test_entries_of_other_types_without_search_mode_are_not_matches_nor_quarantined(
    start_sandbox: Any, tmp_path: Any, http: Any
) -> None:
    """A server sending on each page the Patient and Medication the matches refer to, with no ``search.mode``
    (legal: R4 ``search`` is 0..1): they are read as includes, neither landed as matches of the searched type nor
    quarantined (which failed the 1%-quarantine check of every run on such a server), BDX-29."""
    sb = start_sandbox(patients=1)
    world = make_environment(tmp_path / "others", http=http, page_size=2)
    conn = connect_patient(world, sb, http=http)
    add_fault(http, sb, "search_shape", path="/fhir/MedicationRequest", times=None, shape="unmarked_others")
    shaped = sync_type(world, conn, "MedicationRequest")
    assert shaped.error is None and shaped.pages > 1, (shaped.error, shaped.pages)
    assert shaped.quarantined == 0 and shaped.fetched == shaped.created

    sb.admin.clear_faults()
    whole = sync_type(world, conn, "MedicationRequest", full=True)
    assert whole.error is None and whole.fetched == shaped.fetched and whole.created == 0
