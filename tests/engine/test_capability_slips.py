"""Each reader of a server's CapabilityStatement refuses it only for a slip in what it reads, over the sandbox's
statements written as other servers write theirs (``sandbox.fhir.capability_variants``) on a real socket.

``unread_slips`` puts bare objects (and other JSON kinds) only where no reader goes: a type's one ``operation``,
``implementation``, ``messaging``, ``document``, ``rest.compartment``, a client entry's ``resource``. Before, the
client refused the whole statement for the first of them (``metadata did not return a CapabilityStatement``), so
every reader fell back to the vendor's defaults: a generic server's types searched whole on every run, referenced
resources read one by one, a system ``$export`` sent to a server declaring none, a note held as if the statement
could not be read. A slip in what a reader reads is still refused by that reader, by name."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from connectors.fhir.capability import INTERACTIONS, SEARCH_PARAMS, SYSTEM_EXPORT
from connectors.smart.discovery import discover
from engine import run_bulk_export
from engine.connection_info import load_connection
from engine.references import fetch_references
from engine.writeback import write_note
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, connect_backend, connect_patient, mutate, sandbox_patients
from tests.engine.job_runs import sync_type
from tests.engine.writeback_helpers import FAST, enqueue, writable_connection

_LAST_UPDATED = "_lastUpdated"


def _searches_since(world: SyncWorld, conn: str, http: httpx.Client, sb: Any, request_log: RequestLog) -> list[Any]:
    """The Observation searches of a second (incremental) run, after some changes."""
    assert sync_type(world, conn, "Observation").error is None
    mutate(http, sb, update=20)
    request_log.clear()
    assert sync_type(world, conn, "Observation").error is None
    return request_log.paths("/fhir/Observation")


def test_bdx26_slips_where_no_reader_goes_keep_the_incremental_search(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, request_log: RequestLog, caplog: pytest.LogCaptureFixture
) -> None:
    """The search-parameter reader: the second run searches since the mark, and nothing is logged as unreadable.
    Before, every run searched Observation whole (a generic server's defaults name no ``_lastUpdated``)."""
    sb = start_sandbox(patients=1, capability_variants=["unread_slips"])
    conn = connect_patient(world, sb, http=http)
    with caplog.at_level(logging.WARNING, logger="engine"):
        searches = _searches_since(world, conn, http, sb, request_log)
    assert searches and all(_LAST_UPDATED in s.params for s in searches), searches
    assert not [r for r in caplog.records if "CapabilityStatement" in r.getMessage()], caplog.records


def test_bdx26_a_bare_search_param_is_refused_by_the_search_parameter_reader_alone(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, request_log: RequestLog, caplog: pytest.LogCaptureFixture
) -> None:
    """``rest.searchParam`` as a bare object: the search-parameter reader names it and the vendor's defaults decide
    (a generic server: the type searched whole, nothing missed); the Bulk-level reader still reads the statement."""
    sb = start_sandbox(patients=1, capability_variants=["bare_common_param"])
    conn = connect_patient(world, sb, http=http)
    with caplog.at_level(logging.WARNING, logger="engine"):
        searches = _searches_since(world, conn, http, sb, request_log)
    assert searches and not any(_LAST_UPDATED in s.params for s in searches), searches
    named = "cannot be read for its search parameters (CapabilityStatement.rest[0].searchParam is an object"
    assert any(named in r.getMessage() for r in caplog.records), caplog.records
    info = load_connection(world.env.db, conn)
    with world.env.fhir_client(info) as client:
        assert world.env.capabilities(info, client, reads=SYSTEM_EXPORT) is not None
        assert world.env.capabilities(info, client, reads=SEARCH_PARAMS) is None


def test_bdx01_slips_where_no_reader_goes_keep_a_generic_server_from_an_undeclared_system_export(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, request_log: RequestLog
) -> None:
    """The Bulk-level reader: a generic server whose statement declares no system export is sent no ``$export``.
    Before, the statement was refused whole, so the kick-off was sent anyway (an unreadable statement decides
    nothing)."""
    sb = start_sandbox(capability_variants=["no_system_export", "unread_slips"])
    conn = connect_backend(world, sb, http=http, scope="system/*.rs")
    report = run_bulk_export(world.env, conn, "run-1")
    assert report.status == "failed" and "declares no system-level export" in (report.error or ""), report.error
    assert request_log.paths("/fhir/$export") == []


def test_bdx01_a_bare_system_operation_is_refused_by_the_bulk_level_reader_alone(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """``rest.operation`` as a bare object: the Bulk-level reader names it (the kick-off's answer decides then),
    the search-parameter reader still reads ``_lastUpdated``."""
    sb = start_sandbox(capability_variants=["bare_system_operation"])
    info = load_connection(world.env.db, connect_backend(world, sb, http=http, scope="system/*.rs"))
    with world.env.fhir_client(info) as client, caplog.at_level(logging.WARNING, logger="engine"):
        assert world.env.capabilities(info, client, reads=SYSTEM_EXPORT) is None
        statement = world.env.capabilities(info, client, reads=SEARCH_PARAMS)
    assert statement is not None and info.provider.supports_last_updated("Observation", statement)
    named = "cannot be read for its system operations (CapabilityStatement.rest[0].operation is an object"
    assert any(named in r.getMessage() for r in caplog.records), caplog.records


def test_slips_where_no_reader_goes_keep_referenced_resources_searched_by_id(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, request_log: RequestLog
) -> None:
    """The interaction reader (``search-type`` before an ``_id`` search): referenced patients are searched in one
    ``_id`` batch. Before, each was read on its own (``GET Patient/{id}``), as without a statement."""
    sb = start_sandbox(capability_variants=["unread_slips"])
    conn = load_connection(world.env.db, connect_patient(world, sb, http=http))
    wanted = sandbox_patients(http, sb)[:1]
    request_log.clear()
    with world.env.fhir_client(conn) as client, world.env.warehouse() as wh:
        report = fetch_references(world.env, conn, client, wh, "run-1", [f"Patient/{p}" for p in wanted])["Patient"]
    assert report.error is None and report.created == len(wanted)
    asked = request_log.paths("/fhir/Patient")
    assert [u.params.get("_id") for u in asked] == [",".join(wanted)], asked


def test_dwb40_slips_where_no_reader_goes_let_a_note_be_written(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, request_log: RequestLog
) -> None:
    """The write gate: the note is written (one POST). Before, it was held ``pending`` (``fhir_error``) for as long
    as the server shipped the slip, as if its statement could not be read."""
    sb = start_sandbox(capability_variants=["unread_slips"])
    conn = writable_connection(world, sb, http)
    done = write_note(world.env, FAST, enqueue(world, conn).id)
    assert done.state == "written", (done.state, done.reason_code, done.reason)
    assert len(request_log.paths("/fhir/DocumentReference", "POST")) == 1


def test_dwb40_a_bare_supported_profile_holds_the_note_naming_it(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, request_log: RequestLog
) -> None:
    """DocumentReference's ``supportedProfile`` as a bare string (what the write gate reads): the note waits, its
    reason naming the element, and nothing is sent; the sync's readers still read the statement."""
    sb = start_sandbox(capability_variants=["bare_profile"])
    conn = writable_connection(world, sb, http)
    done = write_note(world.env, FAST, enqueue(world, conn).id)
    assert (done.state, done.reason_code) == ("pending", "fhir_error"), (done.state, done.reason_code, done.reason)
    assert "DocumentReference create" in (done.reason or "") and "supportedProfile is a string" in (done.reason or "")
    assert request_log.paths("/fhir/DocumentReference", "POST") == []
    info = load_connection(world.env.db, conn)
    with world.env.fhir_client(info) as client:
        assert world.env.capabilities(info, client, reads=SEARCH_PARAMS) is not None


def test_sal04_smart_v1_discovery_reads_past_slips_in_what_the_sync_reads(
    start_sandbox: Any, http: httpx.Client
) -> None:
    """SMART v1 discovery reads ``rest.security`` only: slips elsewhere, a bare ``rest.searchParam`` or
    ``rest.operation`` included, do not stop a sign-in (it already worked so; kept)."""
    for variants in (["unread_slips"], ["bare_common_param", "bare_system_operation"]):
        sb = start_sandbox(profile="v1", capability_variants=variants)
        assert discover(sb.fhir_base, http=http).token_endpoint.endswith("/oauth/token")


def test_bdx26_a_slip_in_another_types_entry_keeps_each_types_own_reading(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, request_log: RequestLog, caplog: pytest.LogCaptureFixture
) -> None:
    """Location's ``interaction`` and ``searchParam`` (and Organization's) as bare objects: Observation is still
    searched since the mark and referenced patients in one ``_id`` batch; only the slipped types' own readers refuse,
    naming each slip once. Before,
    the search-parameter and interaction readers refused the statement for every type (searched whole, read one by
    one), though none of them reads Location's entry."""
    sb = start_sandbox(patients=1, capability_variants=["other_type_slips"])
    conn_id = connect_patient(world, sb, http=http)
    with caplog.at_level(logging.WARNING, logger="engine"):
        searches = _searches_since(world, conn_id, http, sb, request_log)
    assert searches and all(_LAST_UPDATED in s.params for s in searches), searches
    assert not [r for r in caplog.records if "CapabilityStatement" in r.getMessage()], caplog.records
    conn, wanted = load_connection(world.env.db, conn_id), sandbox_patients(http, sb)[:1]
    request_log.clear()
    with world.env.fhir_client(conn) as client, world.env.warehouse() as wh:
        assert fetch_references(world.env, conn, client, wh, "run-1", [f"Patient/{p}" for p in wanted])["Patient"]
    assert [u.params.get("_id") for u in request_log.paths("/fhir/Patient")] == [",".join(wanted)]
    with world.env.fhir_client(conn) as client, caplog.at_level(logging.WARNING, logger="engine"):
        for _ in range(2):  # each slip named once, Organization's beside Location's
            for reads in (SEARCH_PARAMS.of("Location"), INTERACTIONS.of("Location"), SEARCH_PARAMS.of("Organization")):
                assert world.env.capabilities(conn, client, reads=reads) is None
    named = [r.getMessage() for r in caplog.records if "cannot be read for its" in r.getMessage()]
    assert len(named) == 3 and len({m.split("(CapabilityStatement.", 1)[1] for m in named}) == 3, named
    # once per base: a batch's other connections of that base are named by it
    assert all(f"(FHIR base {sb.fhir_base})" in m for m in named), named


def test_dwb40_a_slip_in_another_types_entry_lets_a_note_be_written(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, request_log: RequestLog
) -> None:
    """The write gate reads DocumentReference's entry (and Binary's, Provenance's interactions): Location's slips
    are not its own. Before, the note was held ``pending`` (``fhir_error``) for as long as the server shipped them."""
    sb = start_sandbox(capability_variants=["other_type_slips"])
    conn = writable_connection(world, sb, http)
    done = write_note(world.env, FAST, enqueue(world, conn).id)
    assert done.state == "written", (done.state, done.reason_code, done.reason)
    assert len(request_log.paths("/fhir/DocumentReference", "POST")) == 1


def test_dwb40_a_listed_type_holds_the_note_naming_it_not_as_a_server_without_create(
    world: SyncWorld, start_sandbox: Any, http: httpx.Client, request_log: RequestLog
) -> None:
    """DocumentReference's ``type`` as ``["DocumentReference"]`` (a string the write gate compares): the note waits,
    its reason naming the element. Before, the entry described no type, so the note was refused as if the server
    declared no DocumentReference create. The sync's search of Observation still reads the statement."""
    sb = start_sandbox(capability_variants=["listed_type"])
    conn = writable_connection(world, sb, http)
    done = write_note(world.env, FAST, enqueue(world, conn).id)
    assert (done.state, done.reason_code) == ("pending", "fhir_error"), (done.state, done.reason_code, done.reason)
    assert "DocumentReference create" in (done.reason or "") and "type is an array" in (done.reason or "")
    assert request_log.paths("/fhir/DocumentReference", "POST") == []
    info = load_connection(world.env.db, conn)
    with world.env.fhir_client(info) as client:
        assert world.env.capabilities(info, client, reads=SEARCH_PARAMS.of("Observation")) is not None
